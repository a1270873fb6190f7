"""Experiment (``make bench-log``, and a step of ``make bench``): what the inference log costs a
real API under load, with SQLite and with PostgreSQL.

Per round, fresh API processes: "off" (``API_PREDICTION_LOG_SAMPLE=0`` and
``API_LIVE_REFRESH_S=0``: no database work at all), "sqlite" (every prediction logged to a
SQLite file of its own, the live figures refreshed as by default), "postgres" (the same into
the PostgreSQL of ``--database-url``; left out without one) and, as a control, "off2" (a
second "off", to show what the comparison reads when nothing differs). Each is warmed up, then
driven at each concurrency level in a rotating order; the cost is the median of the rounds'
own on/off ratios (the method of :mod:`bench.instrumentation`). After each round, the rows the
servers logged and dropped are counted: a cost measured while rows were being dropped would
flatter the log.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench import experiment, report
from bench.harness import (
    drive_round,
    fresh_servers,
    round_orders,
)
from bench.instrumentation import Runs, medians, relative_cost

OFF = {"API_PREDICTION_LOG_SAMPLE": "0", "API_LIVE_REFRESH_S": "0"}
ON = {"API_PREDICTION_LOG_SAMPLE": "1"}
DROPPED = "tagger_prediction_log_dropped_total"
WARMUP_S = 2


def envs_for(
    workdir: Path, database_url: str | None, password_file: Path | None, threads: int, rnd: int
) -> dict[str, dict[str, str]]:
    """The servers of round ``rnd``: a fresh SQLite file per round; PostgreSQL when given;
    the control "off2" the same as "off"."""
    extra = {"API_POLL_INTERVAL_S": "2", "API_METRICS": "true"}
    if threads:
        extra["API_TORCH_THREADS"] = str(threads)
    envs = {
        "off": {**OFF, **extra},
        "sqlite": {
            **ON,
            **extra,
            "API_DATABASE_URL": f"sqlite:///{workdir / f'inference-{rnd}.db'}",
        },
    }
    if database_url:
        envs["postgres"] = {**ON, **extra, "API_DATABASE_URL": database_url}
        if password_file is not None:
            envs["postgres"]["API_DATABASE_PASSWORD_FILE"] = str(password_file)
    envs["off2"] = envs["off"]
    return envs


def dropped_rows(url: str) -> float:
    """The server's count of dropped log rows (every reason), from its /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((DROPPED + "{", DROPPED + " "))
    )


def logged_rows(url: str, password_file: Path | None) -> int:
    """Rows in the predictions table of the database at ``url``."""
    from sqlalchemy import text

    from shared.inference_log import connect

    engine = connect(url, password_file)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM predictions")).scalar_one())
    finally:
        engine.dispose()


def log_cost(
    store_root: Path,
    bodies: Path,
    levels: list[int],
    rounds: int,
    duration: int,
    threads: int,
    database_url: str | None = None,
    password_file: Path | None = None,
    control: bool = True,
) -> dict[str, Any]:
    """The same load on an API without the log and on one per database, in rounds of fresh
    processes; the cost of each database against "off" as the median of the rounds' ratios."""
    workdir = Path(tempfile.mkdtemp(prefix="tagger-bench-log-"))
    names = [
        "off",
        "sqlite",
        *(["postgres"] if database_url else []),
        *(["off2"] if control else []),
    ]
    runs: dict[str, Runs] = {name: {level: [] for level in levels} for name in names}
    rows: dict[str, int] = {}
    dropped: dict[str, float] = {}
    before = logged_rows(database_url, password_file) if database_url else 0
    try:
        for rep, order in enumerate(round_orders(names, rounds)):
            envs = envs_for(workdir, database_url, password_file, threads, rep)
            with fresh_servers(store_root, envs, order) as servers:
                rows_of_round = drive_round(servers, order, bodies, levels, duration, WARMUP_S)
                for name, level, row in rows_of_round:
                    runs[name][level].append(row)
                    print(json.dumps({"log": name, "round": rep, **row}), flush=True)
                for name in ("sqlite", "postgres"):
                    if name in servers:
                        dropped[name] = dropped.get(name, 0) + dropped_rows(servers[name].url)
            rows["sqlite"] = rows.get("sqlite", 0) + logged_rows(
                envs["sqlite"]["API_DATABASE_URL"], None
            )
        if database_url:
            rows["postgres"] = logged_rows(database_url, password_file) - before
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "rounds": rounds,
        "duration_s": duration,
        "medians": medians(runs),
        "cost": {name: relative_cost(runs[name], runs["off"], levels) for name in rows},
        "rows_logged": rows,
        "rows_dropped": dropped,
    }
    if control:
        result["control"] = relative_cost(runs["off2"], runs["off"], levels)
    result["runs"] = runs
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = experiment.parser("python -m bench.prediction_log", __doc__, rounds=9)
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL to measure too, e.g. postgresql+psycopg://tagger@127.0.0.1/tagger",
    )
    parser.add_argument("--database-password-file", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The experiment on a private copy of the newest version (see :func:`bench.experiment.run`)."""
    args = parse_args(argv)

    def measure(store_root: Path, bodies: Path, levels: list[int]) -> dict[str, Any]:
        return log_cost(
            store_root,
            bodies,
            levels,
            args.rounds,
            args.duration,
            args.threads,
            args.database_url,
            args.database_password_file,
            control=not args.no_control,
        )

    return experiment.run(
        args, "prediction_log", measure, report.print_prediction_log, "bench-log", "latest-log.json"
    )


if __name__ == "__main__":
    sys.exit(main())
