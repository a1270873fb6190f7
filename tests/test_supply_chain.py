"""The supply chain: the hash-locked requirement files (requirements/*.lock) agree with the
pins, and pip refuses a file whose hash differs from the lock's; the SBOM check's comparison.
Offline: pip reads only wheels written here (or the CPU torch wheel already on disk)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.sbom import missing

REQUIREMENTS = REPO / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
# Each top-level file and the locks that together install it.
LOCKS = {
    "api.txt": ["api.lock", "tokenizers.lock"],
    "trainer.txt": ["trainer.lock", "torch.lock"],
    "dev.txt": ["dev.lock"],
    "model.txt": ["model.lock"],
    "sbom.txt": ["sbom.lock"],
}
TORCH_WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (a lock's entries, a top-level file's pins)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            found[normalise(match.group(1))] = match.group(2)
    return found


def entries(lock: Path) -> dict[str, list[str]]:
    """name -> the hashes of its entry, for every entry of a lock."""
    found: dict[str, list[str]] = {}
    name = None
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            name = normalise(match.group(1))
            found[name] = []
        elif name and line.strip().startswith("--hash=sha256:"):
            found[name].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif not line.startswith(" "):
            name = None
    return found


def public(version: str) -> str:
    """The version without its local label (torch's `+cpu`)."""
    return version.split("+")[0]


@pytest.mark.parametrize("top", sorted(LOCKS))
def test_every_pin_is_locked_at_its_version_with_hashes(top: str) -> None:
    locked: dict[str, str] = {}
    for lock in LOCKS[top]:
        for name, hashes in entries(REQUIREMENTS / lock).items():
            assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), (lock, name)
        locked |= pins(REQUIREMENTS / lock)
    wanted = pins(REQUIREMENTS / top)
    stale = {n: v for n, v in wanted.items() if public(locked.get(n, "")) != v}
    assert not stale, f"requirements/{top} pins {stale} that its lock lacks: run make lock"


def test_locks_keep_the_constraints_versions() -> None:
    constraints = pins(REQUIREMENTS / "constraints.txt")
    for lock in ("api.lock", "trainer.lock", "dev.lock", "tokenizers.lock", "torch.lock"):
        for name, version in pins(REQUIREMENTS / lock).items():
            if name in constraints:
                assert public(version) == constraints[name], (lock, name, version)


def test_api_lock_leaves_out_huggingface_hub_and_torch() -> None:
    api = pins(REQUIREMENTS / "api.lock")
    assert "huggingface-hub" not in api and "torch" not in api and "tokenizers" not in api
    assert list(pins(REQUIREMENTS / "tokenizers.lock")) == ["tokenizers"]
    assert pins(REQUIREMENTS / "torch.lock")["torch"].endswith("+cpu")


def make_wheel(folder: Path, name: str = "tagger_probe", version: str = "1.0") -> Path:
    """A minimal, valid pure-Python wheel: one module and its dist-info."""
    dist_info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    wheel_tags = "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files = {
        f"{name}.py": b"VALUE = 1\n",
        f"{dist_info}/METADATA": metadata.encode(),
        f"{dist_info}/WHEEL": wheel_tags.encode(),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return wheel


def pip_install(lock: Path, find_links: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """pip with no index and no config file: only find_links, never a download."""
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"}
    env.pop("PIP_FIND_LINKS", None)
    env.pop("PIP_INDEX_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
         "--find-links", str(find_links), "--no-deps", "--require-hashes", "-r", str(lock),
         *extra],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip


def tampered(sha256: str) -> str:
    return ("0" if sha256[0] != "0" else "1") + sha256[1:]


def test_a_tampered_hash_fails_require_hashes(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = make_wheel(wheels)
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lock = tmp_path / "probe.lock"

    lock.write_text(f"tagger-probe==1.0 \\\n    --hash=sha256:{good}\n")
    ok = pip_install(lock, wheels, "--target", str(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "tagger_probe.py").is_file()

    lock.write_text(f"tagger-probe==1.0 \\\n    --hash=sha256:{tampered(good)}\n")
    bad = pip_install(lock, wheels, "--target", str(tmp_path / "bad"))
    assert bad.returncode != 0
    assert "DO NOT MATCH THE HASHES" in bad.stderr
    assert not (tmp_path / "bad" / "tagger_probe.py").exists()


@pytest.mark.skipif(not TORCH_WHEEL.is_file(), reason=f"no {TORCH_WHEEL} on this machine")
def test_torch_lock_holds_the_cpu_wheel_and_a_tampered_copy_fails(tmp_path: Path) -> None:
    lock = REQUIREMENTS / "torch.lock"
    ok = pip_install(lock, TORCH_WHEEL.parent, "--dry-run", "--ignore-installed")
    assert ok.returncode == 0, ok.stderr
    assert "torch-2.13.0+cpu" in ok.stdout

    (good,) = entries(lock)["torch"]
    copy = tmp_path / "torch.lock"
    copy.write_text(lock.read_text(encoding="utf-8").replace(good, tampered(good)))
    bad = pip_install(copy, TORCH_WHEEL.parent, "--dry-run", "--ignore-installed")
    assert bad.returncode != 0
    assert "DO NOT MATCH THE HASHES" in bad.stderr


def test_sbom_check_names_what_the_sbom_lacks() -> None:
    sbom = {
        "components": [
            {"name": "numpy", "version": "2.4.6"},
            {"name": "Typing_Extensions", "version": "4.16.0"},
            {"name": "outer", "version": "1", "components": [{"name": "inner", "version": "2"}]},
        ]
    }
    installed = [("numpy", "2.4.6"), ("typing-extensions", "4.16.0"), ("inner", "2")]
    assert missing(installed, sbom) == []
    assert missing([*installed, ("numpy", "2.4.7"), ("torch", "2.13.0")], sbom) == [
        "numpy==2.4.7",
        "torch==2.13.0",
    ]


def test_every_service_has_cpu_and_memory_limits() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("cpus") and limits.get("memory"), f"compose.yaml: {name} has no limits"
    stack = yaml.safe_load((REPO / "deploy" / "swarm" / "stack.yaml").read_text(encoding="utf-8"))
    for name, service in stack["services"].items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("memory"), f"deploy/swarm/stack.yaml: {name} has no memory limit"
