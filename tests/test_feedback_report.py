"""``tagger feedback import`` and ``tagger report`` against real SQLite files: what is stored,
what is printed (figures worked out by hand), the HTML page, and how bad input fails."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from shared.inference_log import (
    PredictionLog,
    PredictionRow,
    connect,
    labelled_rows,
    record_feedback,
    title_hash,
    upgrade,
)
from shared.live import PROFILE_FILE, build_profile
from shared.store import ArtefactStore
from tests.conftest import publish, run_cli

LABELS = ["python", "java", "sql"]


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log' / 'inference.db'}"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---- feedback import ------------------------------------------------------------------------
def test_import_stores_the_rows_of_a_wide_tsv(tmp_path: Path) -> None:
    data = tmp_path / "labels.tsv"
    data.write_text(
        "title\ttags\n"
        "How to  merge dicts in python\t['python']\n"
        "Zorblax widget will not render\tzorblax|javascript\n"
        "A row without tags\t\n"
        "Join two tables\t<sql><mysql>\n",
        encoding="utf-8",
    )
    url = sqlite_url(tmp_path)
    result = run_cli("-m", "tagger", "feedback", "import", str(data), "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert "imported 3 feedback row(s)" in result.stdout
    assert "skipped 1 row(s) of the file (1 no tags)" in result.stdout
    rows, hash_only = labelled_rows(connect(url))
    assert hash_only == 0
    assert [(r.title, r.tags, r.source) for r in rows] == [
        ("How to merge dicts in python", ["python"], "import"),
        ("Zorblax widget will not render", ["zorblax", "javascript"], "import"),
        ("Join two tables", ["sql", "mysql"], "import"),
    ]


def test_import_reads_the_long_csv(tmp_path: Path) -> None:
    data = tmp_path / "long.csv"
    data.write_text(
        "post_id,tag_name,tag_id,tag_position,title\n"
        "1,python,10,0,Sort a list\n"
        "1,sorting,11,1,Sort a list\n"
        "2,zorblax,12,0,Zorblax install fails\n",
        encoding="utf-8",
    )
    url = sqlite_url(tmp_path)
    result = run_cli("-m", "trainer.feedback", "import", str(data), "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert "imported 2 feedback row(s)" in result.stdout and "skipped" not in result.stdout
    rows, _ = labelled_rows(connect(url))
    assert [(r.title, r.tags) for r in rows] == [
        ("Sort a list", ["python", "sorting"]),
        ("Zorblax install fails", ["zorblax"]),
    ]


def test_import_of_a_bad_file_or_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n", encoding="utf-8")
    url = sqlite_url(tmp_path)
    for args in (
        (str(bad), "--database-url", url),
        (str(tmp_path / "missing.tsv"), "--database-url", url),
    ):
        result = run_cli("-m", "trainer.feedback", "import", *args)
        assert result.returncode == 2, result.stderr
        assert len(error_lines(result.stderr)) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "log").exists()  # a bad file fails before the database is opened

    good = tmp_path / "good.tsv"
    good.write_text("title\ttags\nSome title\tpython\n", encoding="utf-8")
    unreachable = "postgresql+psycopg://tagger@127.0.0.1:9/tagger"
    result = run_cli("-m", "trainer.feedback", "import", str(good), "--database-url", unreachable)
    assert result.returncode == 2, result.stderr
    assert len(error_lines(result.stderr)) == 1 and "Traceback" not in result.stderr


# ---- report ---------------------------------------------------------------------------------
def test_report_on_an_empty_log_says_so(tmp_path: Path) -> None:
    result = run_cli(
        "-m",
        "tagger",
        "report",
        "--database-url",
        sqlite_url(tmp_path),
        "--artefacts-dir",
        str(tmp_path / "art"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and "no logged predictions" in result.stdout


def stand_in_version(store: ArtefactStore) -> str:
    """A version with three labels and a reference profile, threshold 0.5 (no weights needed:
    the report reads only config.json and profile.json)."""
    scores = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.8, 0.1, 0.1]])
    profile = build_profile(
        scores,
        LABELS,
        0.5,
        [["python"], ["java"], ["sql"], ["python", "sql"]],
        [10, 12, 14, 16],
        [0, 0, 0, 0],
        {"micro_f1": 0.61, "macro_f1": 0.5, "p_at_1": 0.7, "recall_at_5": 0.9},
    )
    config = {"id2label": {str(i): tag for i, tag in enumerate(LABELS)}}
    return publish(
        store,
        files={"config.json": json.dumps(config), PROFILE_FILE: json.dumps(profile)},
    )


def log_rows(url: str, version: str, rows: list[tuple[list[tuple[str, float]], list[str]]]) -> None:
    now = datetime.now(UTC)
    engine = connect(url)
    upgrade(engine)
    writer = PredictionLog(engine, flush_s=0.05)
    writer.start()
    writer.add(
        [
            PredictionRow(
                request_id=f"{version}-{i}",
                position=0,
                created_at=now - timedelta(minutes=len(rows) - i),
                version=version,
                title=f"title {i}",
                title_hash=title_hash(f"title {i}"),
                tokens=10,
                unknown_tokens=1,
                top_tags=top,
                predicted=predicted,
            )
            for i, (top, predicted) in enumerate(rows)
        ]
    )
    assert writer.flush()
    writer.close()


def cell(stdout: str, name: str) -> str:
    """The first version's cell of the table row ``name``."""
    line = next(line for line in stdout.splitlines() if line.startswith(name + " "))
    return re.split(r"\s{2,}", line.strip())[1]


def test_report_table_figures_and_html(tmp_path: Path) -> None:
    store = ArtefactStore(tmp_path / "art")
    version = stand_in_version(store)
    url = sqlite_url(tmp_path)
    log_rows(
        url,
        version,
        [
            ([("python", 0.9), ("java", 0.05)], ["python"]),
            ([("java", 0.6), ("python", 0.3)], ["java"]),
            ([("sql", 0.4), ("python", 0.3)], ["sql"]),
            ([("python", 0.95), ("sql", 0.02)], ["python"]),
        ],
    )
    gone = "20200101T000000000Z-0a0b0c"  # logged, but no longer in the store
    log_rows(url, gone, [([("python", 0.7)], ["python"])])
    engine = connect(url)
    record_feedback(engine, f"{version}-0", 0, ["python"])
    record_feedback(engine, f"{version}-1", 0, ["python", "zorblax"])

    html, png = tmp_path / "report.html", tmp_path / "report.png"
    result = run_cli(
        *("-m", "trainer.live_report", "--database-url", url, "--version", version),
        *("--version", gone, "--artefacts-dir", str(store.root)),
        *("--html", str(html), "--png", str(png)),
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert cell(out, "rows") == "4" and cell(out, "feedback rows") == "2"
    # Row 0: top-1 python, truth {python}; row 1: top-1 java, truth {python, zorblax}.
    assert cell(out, "P@1") == "0.5000 / 0.7000"
    assert cell(out, "R@5") == "0.7500 / 0.9000"  # (1 + 1/2) / 2
    assert cell(out, "micro-F1") == "0.4000 / 0.6100"  # tp 1, fp 1 (java), fn 2
    assert cell(out, "no-tag share") == "0.2500 / 0.2500"  # top score 0.4 < 0.5
    assert cell(out, "unknown-tag share") == "0.3333"  # zorblax: 1 of 3 feedback tags
    assert cell(out, "unknown-token rate") == "0.1000 / 0.0000"
    assert f"{gone}: no longer in the artefact store" in out
    tags = out[out.index(f"top 3 tags of {version}") :].splitlines()[1:4]
    # The reference's true rates order them: python and sql 2/4 (by name), java 1/4.
    assert [t.split()[0] for t in tags] == ["python", "sql", "java"]
    assert tags[0].split()[1:] == ["0.5000", "/", "0.5000"]  # live 2 of 4; reference 2 of 4
    page = html.read_text()
    assert re.search(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)
    assert png.read_bytes().startswith(b"\x89PNG")
