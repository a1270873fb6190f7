"""Every API route and error, hot reload and fallback, with the tiny model in-process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shared.store import LATEST_FILE, ArtefactStore
from tests.conftest import assert_error, clone_version, make_client, wait_for


def test_predict_one_and_many(client: TestClient, published: ArtefactStore) -> None:
    one = client.post("/predict", json={"text": "How to use pandas with numpy?"})
    assert one.status_code == 200
    body = one.json()
    assert body["model_version"] == published.latest()
    (prediction,) = body["predictions"]
    assert len(prediction["tags"]) == 4  # top_k 5 clamped to the tiny model's 4 tags
    assert prediction["predicted"][0] == prediction["tags"][0]["tag"] == "python"

    many = client.post(
        "/predict", json={"texts": ["spring maven error", "mysql join slow"], "top_k": 2}
    ).json()
    assert [p["tags"][0]["tag"] for p in many["predictions"]] == ["java", "sql"]
    assert all(len(p["tags"]) == 2 for p in many["predictions"])


def test_capstone_routes(client: TestClient, published: ArtefactStore) -> None:
    form = client.post("/tag/predict/", data={"text": "spring maven error"})
    assert form.status_code == 200 and form.json()["predictions"][0]["predicted"][0] == "java"
    assert client.get("/tag/status/").json() == {
        "status": "ready",
        "model_version": published.latest(),
    }
    assert_error(client.post("/tag/predict/", data={"text": "  "}), 422, "invalid_request")
    assert_error(client.post("/tag/predict/", data={}), 422, "invalid_request")


def test_health_ready_and_model(client: TestClient, published: ArtefactStore) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "model_version": published.latest()}
    info = client.get("/model").json()
    assert info["version"] == info["latest"] == published.latest()
    assert sorted(info["labels"]) == ["java", "javascript", "python", "sql"]
    assert info["created"] and info["loaded_at"] and info["base_model"]
    assert info["training"]["config"]["epochs"] == 3
    assert {"micro_f1", "macro_f1", "p_at_1", "recall_at_5"} <= set(info["metrics"])
    assert info["failed_versions"] == []


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"text": ""}, 422, "invalid_request"),
        ({"text": " \t\n"}, 422, "invalid_request"),
        ({"texts": ["ok", "  "]}, 422, "invalid_request"),
        ({"texts": []}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"text": "a", "texts": ["b"]}, 422, "invalid_request"),
        ({"text": 5}, 422, "invalid_request"),
        ({"text": "a", "top_k": 0}, 422, "invalid_request"),
        ({"text": "a", "top_k": 1000}, 422, "invalid_top_k"),
        ({"text": "a", "extra": 1}, 422, "invalid_request"),
        ({"text": "x" * 201}, 413, "text_too_long"),
        ({"texts": ["a"] * 5}, 422, "too_many_texts"),
    ],
)
def test_predict_errors_are_json(client: TestClient, payload: dict, status: int, code: str) -> None:
    assert_error(client.post("/predict", json=payload), status, code)


def test_transport_errors_are_json(client: TestClient) -> None:
    body = assert_error(
        client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )
    assert "not valid JSON" in body["message"]
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_unexpected_failure_is_a_json_500(client: TestClient) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("secret internals")

    client.app.state.inference.submit = boom  # type: ignore[attr-defined]
    body = assert_error(client.post("/predict", json={"text": "x"}), 500, "internal_error")
    assert "secret" not in body["message"]


def test_docs_and_openapi_have_examples(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text  # served offline, from the package
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/tag/predict/", "/tag/status/", "/model", "/health", "/ready"} <= set(
        spec["paths"]
    )
    assert spec["components"]["schemas"]["PredictRequest"]["examples"]
    assert spec["components"]["schemas"]["PredictResponse"]["examples"]


def test_no_model_yet_then_first_model_appears(tmp_path: Path, published: ArtefactStore) -> None:
    root = tmp_path / "empty"
    with make_client(root) as c:
        body = assert_error(c.get("/ready"), 503, "model_not_ready")
        assert "run the trainer" in body["message"].lower()
        assert_error(c.post("/predict", json={"text": "x"}), 503, "model_not_ready")
        assert c.get("/tag/status/").json()["status"] == "no_model"
        assert c.get("/model").json()["version"] is None

        shutil.copytree(published.root, root, dirs_exist_ok=True)
        wait_for(lambda: c.get("/ready").status_code == 200)
        assert c.post("/predict", json={"text": "x"}).json()["model_version"] == published.latest()


def test_hot_reload_swaps_and_skips_a_bad_version(store_copy: ArtefactStore) -> None:
    first = store_copy.latest()
    assert first is not None
    with make_client(store_copy.root) as c:
        second = clone_version(store_copy, first)
        store_copy.set_latest(second)
        wait_for(lambda: c.get("/model").json()["version"] == second)

        bad = clone_version(store_copy, first)
        weights = store_copy.root / bad / "model.safetensors"
        weights.chmod(0o644)
        with weights.open("r+b") as handle:
            handle.seek(-4, 2)
            handle.write(b"\0\0\0\0")
        # Point LATEST at it behind the store's back (set_latest would refuse).
        (store_copy.root / LATEST_FILE).write_text(bad + "\n")
        wait_for(
            lambda: any(f["version"] == bad for f in c.get("/model").json()["failed_versions"])
        )
        info = c.get("/model").json()
        assert info["version"] == second and info["latest"] == bad
        assert "sha256" in info["failed_versions"][0]["error"]
        assert c.post("/predict", json={"text": "x"}).json()["model_version"] == second


def test_restart_falls_back_to_newest_valid_version(store_copy: ArtefactStore) -> None:
    good = store_copy.latest()
    assert good is not None
    bad = clone_version(store_copy, good)
    (store_copy.root / bad / "tagger.json").chmod(0o644)
    (store_copy.root / bad / "tagger.json").write_text("{}")
    (store_copy.root / LATEST_FILE).write_text(bad + "\n")
    with make_client(store_copy.root) as c:
        info = c.get("/model").json()
        assert info["version"] == good
        assert [f["version"] for f in info["failed_versions"]] == [bad]


def test_unreadable_latest_serves_nothing_until_mended(store_copy: ArtefactStore) -> None:
    good = store_copy.latest()
    assert good is not None
    (store_copy.root / LATEST_FILE).write_text("../../etc/passwd\n")
    with make_client(store_copy.root) as c:
        assert c.get("/ready").status_code == 503
        info = c.get("/model").json()
        assert info["version"] is None and info["latest"] is None
        assert "not a version name" in info["latest_error"]
        (store_copy.root / LATEST_FILE).write_text(good + "\n")  # mended: hot-loaded
        wait_for(lambda: c.get("/model").json()["version"] == good)
        assert c.get("/model").json()["latest_error"] is None
        assert c.get("/ready").status_code == 200


def test_int8_serving(published: ArtefactStore) -> None:
    with make_client(published.root, precision="int8") as c:
        assert c.get("/model").json()["precision"] == "int8"
        body = c.post("/predict", json={"text": "spring maven error"}).json()
        assert body["predictions"][0]["predicted"][0] == "java"
