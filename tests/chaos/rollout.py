"""The rollout scenarios of ``make chaos`` (issue 21): faults around the candidate pointer.

Each runs against the suite's API and store (:class:`tests.chaos.run.Chaos`) while its client
polls, and leaves no candidate behind. The candidates are copies of the served version in
canary mode at half the requests, so a version the API should not serve would answer the
client at once, and the suite's check would name it:

- the API SIGKILLed at a random moment while a candidate loads, then restarted: it serves
  ``LATEST`` and loads the candidate again;
- a corrupted candidate: the store refuses to point at it; written into ``CANDIDATE`` past the
  store, the API refuses it (the reason in ``/model``) and the served version serves on;
- the candidate's folder deleted under the API: it drops the candidate, no request fails;
- two operators moving the pointers at once (shadow, canary, promote, abort, use; one of them
  also tries a corrupted version): every value ``CANDIDATE`` takes verifies, no refusal is
  more than one line, the store ends consistent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import threading
import time
from typing import TYPE_CHECKING, Any

from shared.store import CANARY, CANDIDATE_FILE, ArtefactError, ArtefactStore, Candidate, verify
from shared.store.durability import write_atomic
from tests.chaos.checks import ChaosFailure, expect
from tests.conftest import clone_version, corrupt

if TYPE_CHECKING:
    from tests.chaos.run import Chaos

HALF = 0.5  # the canary fraction: half of the client's requests go to the candidate
RECORDED = {"shadow", "canary", "promoted", "aborted"}  # a candidate's statuses


class CandidateWatcher(threading.Thread):
    """Records every version ``CANDIDATE`` names (read every 10 ms, lock-free like the API)."""

    def __init__(self, store: ArtefactStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.seen: list[str] = []
        self.unreadable = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.01):
            try:
                candidate = self.store.candidate()
            except ArtefactError:
                self.unreadable += 1
                continue
            if candidate is not None and (not self.seen or self.seen[-1] != candidate.version):
                self.seen.append(candidate.version)


def candidate_of(chaos: Chaos) -> dict[str, Any]:
    """The ``candidate`` section of the API's ``/model`` ({} when it reports none)."""
    return dict(chaos.api.model().get("candidate") or {})


def wait_candidate(chaos: Chaos, version: str | None, loaded: bool, timeout: float = 30) -> float:
    """Wait until ``/model`` reports ``version`` as the candidate, loaded or not (None: no
    candidate at all); the seconds it took."""
    started = time.monotonic()
    seen: dict[str, Any] = {}
    while time.monotonic() - started < timeout:
        seen = candidate_of(chaos)
        if version is None and not seen.get("version"):
            return time.monotonic() - started
        if seen.get("version") == version and bool(seen.get("loaded")) == loaded:
            return time.monotonic() - started
        time.sleep(0.05)
    raise ChaosFailure(f"/model candidate after {timeout:.0f} s: {seen}, not {version} {loaded}")


def copy_of_latest(chaos: Chaos) -> str:
    """A new version with the served one's files (so it verifies and loads like it)."""
    latest = chaos.store.latest()
    assert latest is not None
    return clone_version(chaos.store, latest)


def served_as_candidate(chaos: Chaos, version: str) -> None:
    """``version`` verified and is pointed at by the store: the client may be answered by it."""
    chaos.candidates.add(version)


def finish(chaos: Chaos, version: str) -> str:
    """Abort the candidate if it is still there; the suite's checks; the served version."""
    with contextlib.suppress(ArtefactError):
        chaos.store.abort_candidate("chaos: scenario over", expected=version)
    wait_candidate(chaos, None, False)
    expect(not (chaos.store.root / CANDIDATE_FILE).exists(), "CANDIDATE left behind")
    return chaos.check(True)


def kill_api_while_candidate_loads(chaos: Chaos) -> str:
    version = copy_of_latest(chaos)
    chaos.store.set_candidate(version, CANARY, fraction=HALF, reason="chaos: kill while loading")
    served_as_candidate(chaos, version)
    delay = chaos.rng.uniform(0, 0.12)  # the API polls every 0.1 s; a tiny model loads in ~0.1 s
    time.sleep(delay)
    with chaos.client.paused():
        loading = candidate_of(chaos)
        chaos.api.kill()
        chaos.api.start()
        chaos.api.wait("/ready")
    took = wait_candidate(chaos, version, loaded=True)
    loaded = sorted(chaos.api.model().get("loaded_versions") or [])
    expect(loaded == sorted([str(chaos.store.latest()), version]), f"loaded_versions {loaded}")
    time.sleep(1)  # the client is answered by both
    state = "loaded" if loading.get("loaded") else "not yet loaded"
    return (
        f"killed {delay:.2f} s after CANDIDATE moved ({state}); restarted, the candidate loaded "
        f"{took:.1f} s after /ready; {finish(chaos, version)} served"
    )


def corrupted_candidate(chaos: Chaos) -> str:
    latest = chaos.store.latest()
    assert latest is not None
    version = copy_of_latest(chaos)
    corrupt(chaos.store, version)
    chaos.corrupted.add(version)
    try:
        chaos.store.set_candidate(version, CANARY, fraction=HALF, reason="chaos: corrupted")
        raise ChaosFailure(f"the store pointed CANDIDATE at the corrupted {version}")
    except ArtefactError as exc:
        refused = str(exc)
    expect("\n" not in refused, f"the store's refusal is not one line: {refused!r}")
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    past_the_store = Candidate(version, CANARY, 0.2, HALF, now, latest, "chaos: past the store")
    write_atomic(chaos.store.root / CANDIDATE_FILE, past_the_store.to_json())
    started = time.monotonic()
    seen: dict[str, Any] = {}
    while time.monotonic() - started < 15 and not seen.get("error"):
        seen = candidate_of(chaos)
        time.sleep(0.05)
    expect(bool(seen.get("error")), f"/model gives no reason for refusing {version}: {seen}")
    expect(not seen.get("loaded"), f"the API loaded the corrupted {version}: {seen}")
    time.sleep(1)  # the client goes on: never answered by it (the check below)
    model = chaos.api.model()
    expect(model["version"] == latest, f"the API serves {model['version']}, not {latest}")
    expect(model.get("loaded_versions") == [latest], f"loaded {model.get('loaded_versions')}")
    abort = chaos.versions_cli("abort", "--reason", "chaos: corrupted candidate")
    expect(abort.exit == 0, f"`versions abort` exited {abort.exit}: {abort.text()[-300:]}")
    served = finish(chaos, version)
    return f"store refused ({refused[:60]}...); API refused: {str(seen['error'])[:80]}; {served}"


def candidate_deleted(chaos: Chaos) -> str:
    version = copy_of_latest(chaos)
    chaos.store.set_candidate(version, CANARY, fraction=HALF, reason="chaos: to be deleted")
    served_as_candidate(chaos, version)
    wait_candidate(chaos, version, loaded=True)
    answered_before = chaos.client.ok
    time.sleep(1)
    shutil.rmtree(chaos.store.root / version)
    deleted_at = time.monotonic()
    while time.monotonic() - deleted_at < 15 and candidate_of(chaos).get("loaded"):
        time.sleep(0.05)
    seen = candidate_of(chaos)
    expect(not seen.get("loaded"), f"the API still serves the deleted {version}: {seen}")
    dropped_s = time.monotonic() - deleted_at
    time.sleep(1)
    abort = chaos.versions_cli("abort", "--reason", "chaos: its folder was deleted")
    expect(abort.exit == 0, f"`versions abort` exited {abort.exit}: {abort.text()[-300:]}")
    served = finish(chaos, version)
    return (
        f"dropped {dropped_s:.1f} s after its folder went ({seen.get('error') or 'no error'}); "
        f"{chaos.client.ok - answered_before} answers meanwhile; {served}"
    )


def two_operators(chaos: Chaos) -> str:
    """Two operator processes at once: one rolls A in and aborts it, the other promotes B and
    rolls back, both with --replace, one also trying a corrupted version each round."""
    start = chaos.store.latest()
    assert start is not None
    a, b, broken = copy_of_latest(chaos), copy_of_latest(chaos), copy_of_latest(chaos)
    corrupt(chaos.store, broken)
    chaos.corrupted.add(broken)
    served_as_candidate(chaos, a)
    served_as_candidate(chaos, b)
    chaos.known_promoted.add(b)  # promoted on purpose below
    rounds = 4
    first = [
        ["shadow", a, "--replace"],
        ["canary", broken, "--fraction", "0.5", "--replace"],
        ["canary", a, "--fraction", "0.5", "--replace"],
        ["abort", "--reason", "chaos: operator one"],
    ]
    second = [
        ["shadow", b, "--replace"],
        ["canary", b, "--fraction", "0.5", "--replace"],
        ["promote", b],
        ["use", start],
    ]
    results: list[tuple[list[str], int, str]] = []
    lock = threading.Lock()

    def operator(steps: list[list[str]]) -> None:
        for _ in range(rounds):
            for argv in steps:
                job = chaos.versions_cli(*argv)
                with lock:
                    results.append((argv, job.exit if job.exit is not None else -1, job.text()))

    watcher = CandidateWatcher(chaos.store)
    watcher.start()
    threads = [threading.Thread(target=operator, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    time.sleep(0.1)
    watcher.stop_event.set()
    watcher.join()
    for argv, code, text in results:
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        expect(code in (0, 2), f"`versions {' '.join(argv)}` exited {code}: {text[-300:]}")
        expect(code == 0 or len(errors) == 1, f"refusal not one line: {text[-300:]}")
        if broken in argv:
            expect(code != 0, f"`versions {' '.join(argv)}` accepted the corrupted version")
    expect(broken not in watcher.seen, f"CANDIDATE named the corrupted {broken}")
    for version in set(watcher.seen):
        expect(version in (a, b), f"CANDIDATE named {version}")
        verify(chaos.store.root / version)
        status = chaos.store.promotion(version).status
        expect(status in RECORDED, f"candidate {version} recorded {status}")
    expect(watcher.unreadable == 0, f"CANDIDATE unreadable {watcher.unreadable} times")
    refused = sum(code != 0 for _, code, _ in results)
    candidate = chaos.store.candidate()
    expect(candidate is None or candidate.version != chaos.store.latest(), "CANDIDATE == LATEST")
    if candidate is not None:
        chaos.store.abort_candidate("chaos: two operators over")
    with contextlib.suppress(ArtefactError):
        chaos.store.set_latest(start, reason="chaos: back to where the operators began")
    wait_candidate(chaos, None, False)
    served = chaos.check(True)
    return (
        f"{len(results)} commands from 2 operators, {refused} refused (one line each); "
        f"CANDIDATE took {len(watcher.seen)} values, all verified; never {broken}; {served}"
    )


SCENARIOS = [
    ("candidate: API killed while it loads", kill_api_while_candidate_loads),
    ("candidate: corrupted", corrupted_candidate),
    ("candidate: deleted under the API", candidate_deleted),
    ("candidate: two operators at once", two_operators),
]
