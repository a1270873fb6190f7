"""API keys: the keys file (format, errors, atomic rewrites), the constant-time match, the
``python -m api.keys`` / ``tagger keys`` commands, and the API with keys on: 401 without or
with a wrong key, 200 with it by either header, the key's name (never the key) in the access
line and the metrics, the file re-read on change, the OpenAPI security schemes."""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import needs_key, presented_key
from api.keys import (
    KeysFileError,
    add_key,
    hash_key,
    load_keys,
    main,
    names,
    new_key,
    parse_keys,
    remove_key,
)
from api.settings import ApiSettings
from shared.store import ArtefactStore
from tests.conftest import assert_error, free_port, make_client, run_cli, wait_for
from tests.serving import ApiProcess


def entry(name: str, key: str) -> str:
    return f"{name}:{hashlib.sha256(key.encode()).hexdigest()}"


# ---- the file -------------------------------------------------------------------------------
def test_a_file_with_comments_and_blank_lines_reads_and_matches() -> None:
    ring = parse_keys(f"# team keys\n\n{entry('alice', 'k1')}\n  {entry('bob.2', 'k2')}  \n")
    assert ring.names == ["alice", "bob.2"]
    assert ring.match("k1") == "alice" and ring.match("k2") == "bob.2"
    assert ring.match("k3") is None and ring.match("") is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("alice", "line 1: expected NAME:SHA256HEX"),
        ("# c\nalice:abc", "line 2: expected NAME:SHA256HEX"),
        (entry("Alice", "k"), "line 1: name 'Alice' is not"),
        (entry("-a", "k"), "line 1: name '-a' is not"),
        (entry("a" * 64, "k"), "is not"),
        (f"{entry('a', 'k1')}\n{entry('a', 'k2')}", "line 2: name 'a' is already used above"),
        ("\n".join(entry(f"k{i}", str(i)) for i in range(1001)), "line 1001: more than 1000"),
    ],
)
def test_a_malformed_file_is_refused_with_its_line(text: str, error: str) -> None:
    with pytest.raises(KeysFileError, match=error) as info:
        parse_keys(text, "keys")
    assert "\n" not in str(info.value)


def test_an_unreadable_file_is_one_line() -> None:
    with pytest.raises(KeysFileError, match=r"cannot read the keys file /nope/keys: No such file"):
        load_keys(Path("/nope/keys"))


def test_match_compares_with_every_stored_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = parse_keys("\n".join(entry(f"k{i}", f"key{i}") for i in range(50)))
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert ring.match("key0") == "k0"  # the first entry: still all 50 compared
    assert ring.match("wrong") is None
    assert len(calls) == 100


def test_new_keys_are_long_and_random() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(k.startswith("tgr_") and len(k) == 47 for k in keys)


def test_add_and_remove_rewrite_atomically_keeping_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "api-keys"
    key = add_key(path, "alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key not in path.read_text() and hash_key(key) in path.read_text()
    path.write_text(f"# keep me\n{path.read_text()}")
    key2 = add_key(path, "bob")
    assert load_keys(path).match(key) == "alice" and load_keys(path).match(key2) == "bob"
    with pytest.raises(KeysFileError, match="already has a key named 'alice'"):
        add_key(path, "alice")
    with pytest.raises(KeysFileError, match="name 'Bad Name' is not"):
        add_key(path, "Bad Name")
    remove_key(path, "alice")
    assert path.read_text().startswith("# keep me\n") and names(path) == ["bob"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeysFileError, match="has no key named 'alice'"):
        remove_key(path, "alice")
    assert [p.name for p in path.parent.iterdir()] == ["api-keys"]  # no temp file left


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs sha256sum")
def test_an_entry_made_by_the_shell_matches(tmp_path: Path) -> None:
    script = (
        "key=\"tgr_$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')\"; "
        "printf '%s:%s\\n' default \"$(printf %s \"$key\" | sha256sum | cut -d' ' -f1)\" > keys; "
        'printf %s "$key"'
    )
    key = subprocess.run(
        ["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert load_keys(tmp_path / "keys").match(key) == "default"


# ---- the commands ---------------------------------------------------------------------------
def test_add_prints_only_the_key_and_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys"
    assert main(["add", "alice", "--file", str(path)]) == 0
    out, err = capsys.readouterr()
    assert load_keys(path).match(out.strip()) == "alice" and out.count("\n") == 1
    assert "shown once" in err and str(path) in err
    monkeypatch.setenv("API_KEYS_FILE", str(path))  # the default file
    assert main(["list"]) == 0
    assert capsys.readouterr().out == "alice\n"
    assert main(["add", "alice"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["remove", "alice"]) == 0
    assert main(["list"]) == 0 and capsys.readouterr().out == ""


def test_tagger_keys_runs_the_same_command(tmp_path: Path) -> None:
    done = run_cli("-m", "tagger", "keys", "add", "ci", "--file", str(tmp_path / "k"))
    assert done.returncode == 0, done.stderr
    assert load_keys(tmp_path / "k").match(done.stdout.strip()) == "ci"


# ---- the API with keys on -------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "api-keys"
    return {"path": path, "alice": add_key(path, "alice"), "bob": add_key(path, "bob")}


def test_requests_without_a_valid_key_are_refused(
    published: ArtefactStore, keys: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="api.access")
    body = {"text": "pandas dataframe"}
    with make_client(published.root, keys_file=keys["path"]) as c:
        for headers in ({}, {"Authorization": f"Bearer {keys['alice']}x"}, {"X-API-Key": "no"}):
            r = c.post("/predict", json=body, headers=headers)
            assert_error(r, 401, "unauthorized")
            assert r.headers["WWW-Authenticate"] == "Bearer" and r.json()["request_id"]
        for path in ("/model", "/openapi.json", "/docs", "/metrics", "/tag/status/", "/nope"):
            assert_error(c.get(path), 401, "unauthorized")
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
        ok = c.post("/predict", json=body, headers={"Authorization": f"Bearer {keys['alice']}"})
        assert ok.status_code == 200
        assert c.post("/predict", json=body, headers={"X-API-Key": keys["bob"]}).status_code == 200
        assert c.get("/model", headers={"X-API-Key": keys["bob"]}).status_code == 200
        metrics = c.get("/metrics", headers={"X-API-Key": keys["bob"]}).text
    assert 'tagger_requests_by_key_total{key="unknown",status="401"} 9.0' in metrics
    assert 'tagger_requests_by_key_total{key="alice",status="200"} 1.0' in metrics
    assert 'tagger_requests_by_key_total{key="bob",status="200"} 2.0' in metrics
    assert 'tagger_requests_by_key_total{key="anonymous",status="200"} 2.0' in metrics
    assert 'tagger_quota_rejections_total{key="alice"} 0.0' in metrics
    lines = [r for r in caplog.records if r.name == "api.access"]
    assert [getattr(r, "key", None) for r in lines if r.getMessage().startswith("POST")] == [
        "unknown",
        "unknown",
        "unknown",
        "alice",
        "bob",
    ]
    everything = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert keys["alice"] not in everything and keys["bob"] not in everything


def test_keys_off_the_api_is_as_before(published: ArtefactStore) -> None:
    with make_client(published.root) as c:
        assert c.post("/predict", json={"text": "sql join"}).status_code == 200
        schema = c.get("/openapi.json").json()
        metrics = c.get("/metrics").text
    assert "securitySchemes" not in schema["components"]
    assert "security" not in schema["paths"]["/predict"]["post"]
    assert 'tagger_requests_by_key_total{key="anonymous",status="200"} 2.0' in metrics


def test_the_openapi_document_names_the_key_schemes(
    published: ArtefactStore, keys: dict[str, Any]
) -> None:
    with make_client(published.root, keys_file=keys["path"]) as c:
        schema = c.get("/openapi.json", headers={"X-API-Key": keys["alice"]}).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http" and schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["apiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    predict = schema["paths"]["/predict"]["post"]
    assert predict["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert {"401", "429"} <= set(predict["responses"])
    assert "Retry-After" in predict["responses"]["429"]["headers"]
    for probe in ("/health", "/ready"):
        assert "security" not in schema["paths"][probe]["get"]


def test_the_internal_port_and_the_probes_need_no_key() -> None:
    settings = ApiSettings(internal_port=9000)
    scope = {"path": "/model", "server": ("10.0.0.2", 9000), "headers": []}
    assert not needs_key(scope, settings)
    assert needs_key({**scope, "server": ("10.0.0.2", 8000)}, settings)
    assert not needs_key({**scope, "path": "/health", "server": ("h", 8000)}, settings)
    assert needs_key(scope, ApiSettings())


def test_the_key_is_taken_from_either_header() -> None:
    def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
        return {"headers": list(headers)}

    assert presented_key(scope((b"authorization", b"Bearer  k1 "))) == "k1"
    assert presented_key(scope((b"authorization", b"bearer k1"))) == "k1"
    assert presented_key(scope((b"x-api-key", b"k2"))) == "k2"
    assert presented_key(scope((b"authorization", b"Basic abc"), (b"x-api-key", b"k2"))) == "k2"
    assert presented_key(scope((b"authorization", b"Bearer "))) is None
    assert presented_key(scope()) is None


def test_the_file_is_re_read_when_it_changes(
    published: ArtefactStore, keys: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    path: Path = keys["path"]
    with make_client(published.root, keys_file=path, poll_interval_s=0.05) as c:
        carol = add_key(path, "carol")

        def status(key: str) -> int:
            return c.get("/tag/status/", headers={"X-API-Key": key}).status_code

        wait_for(lambda: status(carol) == 200, what="the new key was not accepted")
        remove_key(path, "alice")
        wait_for(lambda: status(keys["alice"]) == 401, what="the removed key still works")
        path.write_text(path.read_text() + "broken line\n")
        wait_for(
            lambda: "cannot be used (the old keys stay)" in caplog.text,
            what="no error logged for a broken file",
        )
        assert status(carol) == 200 and status(keys["bob"]) == 200


def test_an_unusable_keys_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("not a key line\n")
    done = run_cli(
        "-m",
        "api",
        env={"API_KEYS_FILE": str(tmp_path / "keys"), "TAGGER_ARTEFACTS_DIR": str(tmp_path)},
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: API_KEYS_FILE: {tmp_path / 'keys'}, line 1: expected NAME:SHA256HEX "
        "(64 hex digits)\n"
    )


@pytest.mark.integration
def test_with_an_internal_port_only_the_public_port_asks_for_a_key(
    published: ArtefactStore, tmp_path: Path
) -> None:
    key = add_key(tmp_path / "keys", "ops")
    internal = free_port()
    env = {
        "API_KEYS_FILE": str(tmp_path / "keys"),
        "API_INTERNAL_PORT": str(internal),
        "API_LOG_LEVEL": "info",
        "API_LOG_FORMAT": "json",
    }
    with ApiProcess(tmp_path, published.root, **env) as api:
        inside = f"http://127.0.0.1:{internal}"
        body = {"text": "spring maven error"}
        assert_error(httpx.post(f"{api.url}/predict", json=body), 401, "unauthorized")
        assert_error(httpx.get(f"{api.url}/model"), 404, "not_found")  # not even a 401
        with_key = httpx.post(f"{api.url}/predict", json=body, headers={"X-API-Key": key})
        assert with_key.status_code == 200
        assert httpx.post(f"{inside}/predict", json=body).status_code == 200
        assert httpx.get(f"{inside}/model").status_code == 200
        schema = httpx.get(f"{inside}/openapi.json").json()
        metrics = httpx.get(f"{inside}/metrics").text
    assert "security" not in schema["paths"]["/model"]["get"]
    assert schema["paths"]["/predict"]["post"]["security"]
    assert 'tagger_requests_by_key_total{key="ops",status="200"} 1.0' in metrics
    assert 'tagger_requests_by_key_total{key="anonymous",status="200"}' in metrics
    log = api.log()
    assert '"key": "ops"' in log and '"key": "unknown"' in log and key not in log
