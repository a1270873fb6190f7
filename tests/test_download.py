"""``make data``'s downloader, against a local HTTP server (no test needs the internet)."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from trainer.download import FILES, DownloadError, download, main


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    for name in FILES:
        (served / name).write_text(f"title\ttags\n{name}\t['a']\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_downloads_missing_files_and_keeps_existing(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "train.tsv").write_text("mine")
    written = download(dest, server)
    assert written == [dest / "validation.tsv"]
    assert (dest / "train.tsv").read_text() == "mine"
    assert "validation.tsv" in (dest / "validation.tsv").read_text()
    assert download(dest, server) == []
    assert not list(dest.glob(".*part"))


def test_missing_remote_file_fails_cleanly(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"put train\.tsv, validation\.tsv"):
        download(tmp_path / "raw", server + "/nothing-here")
    assert not any((tmp_path / "raw").iterdir())


def test_no_network_fails_fast_with_where_to_put_files(tmp_path: Path, capsys) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    code = main(["--dest", str(tmp_path / "raw"), "--base-url", closed, "--timeout", "5"])
    assert code == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err.startswith("error: could not download") and str(tmp_path / "raw") in err
