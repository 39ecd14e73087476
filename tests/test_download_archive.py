"""`skinlesion download archive`: delegation to isic-cli, checked with a fake `isic` on PATH.

The fake writes what the real `isic image download` writes (images named by ISIC id,
metadata.csv, attribution.txt, licenses/) and records its argv, so the exact command
line and the hand-over to `prepare` are tested without network.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from skinlesion.download import (
    MARKER_NAME,
    ArchiveQuery,
    ArchiveToolError,
    NetworkUnavailableError,
    download_archive,
)
from skinlesion.download import archive as archive_module
from skinlesion.download.archive import build_argv, find_isic_cli, parse_collections

FAKE_ISIC = """#!{python}
import csv, json, os, sys
from pathlib import Path
from PIL import Image

argv = sys.argv[1:]
if argv == ["--version"]:
    print("isic, version 12.4.0-fake")
    sys.exit(0)
with open(os.environ["FAKE_ISIC_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
if os.environ.get("FAKE_ISIC_EXIT"):
    sys.exit(int(os.environ["FAKE_ISIC_EXIT"]))
out = Path(argv[-1])
limit = int(argv[argv.index("--limit") + 1])
rows = []
for i in range(limit):
    isic_id = f"ISIC_{{9000000 + i}}"
    Image.new("RGB", (40, 30), (20 * i, 90, 140)).save(out / f"{{isic_id}}.jpg")
    rows.append({{"isic_id": isic_id, "patient_id": f"IP_{{i}}", "diagnosis_1": "Malignant",
                 "copyright_license": "CC-BY-NC"}})
with open(out / "metadata.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, ["isic_id", "patient_id", "diagnosis_1", "copyright_license"])
    writer.writeheader()
    writer.writerows(rows)
(out / "attribution.txt").write_text("Anonymous")
(out / "licenses").mkdir(exist_ok=True)
(out / "licenses" / "CC-BY-NC.txt").write_text("licence text")
print(f"Successfully downloaded {{limit}} images to {{out}}/.")
"""

SEARCH = 'diagnosis_1:"Malignant"'


class _Api(BaseHTTPRequestHandler):
    """Stands in for api.isic-archive.com in the reachability probe."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def local_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the probe at 127.0.0.1: tests never reach the real ISIC Archive."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/api/v2/"
    monkeypatch.setattr(archive_module, "API_URL", url)
    yield url
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def fake_isic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `isic` first on PATH; returns its argv log."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "isic"
    exe.write_text(FAKE_ISIC.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "argv.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_ISIC_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_the_isic_cli_command_line_is_exact() -> None:
    query = ArchiveQuery(search=SEARCH, collections=(70, 65), limit=25)
    assert build_argv("/opt/bin/isic", query, Path("/data/.sel.isic-partial")) == [
        "/opt/bin/isic", "image", "download", "--search", 'diagnosis_1:"Malignant"',
        "--collections", "70,65", "--limit", "25", "/data/.sel.isic-partial"]
    assert build_argv("isic", ArchiveQuery(), "out") == ["isic", "image", "download",
                                                         "--limit", "0", "out"]


def test_collections_are_parsed_and_bad_values_rejected() -> None:
    assert parse_collections("70") == (70,)
    assert parse_collections("70,65") == (70, 65)
    assert parse_collections(None) == ()
    for bad in ("seventy", "70,", "-1", "70;65"):
        with pytest.raises(ValueError, match="collection ids"):
            parse_collections(bad)
    with pytest.raises(ValueError, match="limit"):
        ArchiveQuery(limit=-1)


def test_missing_isic_cli_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ArchiveToolError, match=r"pip install 'skinlesion\[archive\]'"):
        find_isic_cli(search_path=str(tmp_path))


def test_archive_download_delegates_and_is_prepare_ready(fake_isic: Path, tmp_path: Path) -> None:
    out = tmp_path / "data" / "malignant"
    query = ArchiveQuery(search=SEARCH, collections=(70,), limit=3)
    result = download_archive(query, out)
    staging = tmp_path / "data" / ".malignant.isic-partial"
    assert calls(fake_isic) == [["image", "download", "--search", SEARCH, "--collections",
                                 "70", "--limit", "3", str(staging)]]
    assert not staging.exists()
    assert sorted(p.name for p in out.glob("*.jpg")) == [
        "ISIC_9000000.jpg", "ISIC_9000001.jpg", "ISIC_9000002.jpg"]
    assert (out / "metadata.csv").read_text().startswith("isic_id,patient_id,diagnosis_1")
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["query"] == {"search": SEARCH, "collections": [70], "limit": 3}
    assert marker["images"] == 3 and marker["metadata_rows"] == 3
    assert marker["licences"] == ["CC-BY-NC"]
    assert marker["isic_cli_version"] == "isic, version 12.4.0-fake"
    assert marker["command"] == ["isic", "image", "download", "--search", SEARCH,
                                 "--collections", "70", "--limit", "3", "OUTDIR"]
    assert not result.already_complete

    from skinlesion.data.prepare import PrepareSettings, prepare

    prepared = prepare([out], tmp_path / "prepared",
                       PrepareSettings(fmt=result.to_json()["prepare_format"], size=16, workers=1))
    assert sorted(prepared.manifest["image_id"]) == ["ISIC_9000000", "ISIC_9000001",
                                                     "ISIC_9000002"]
    assert set(prepared.manifest["label"]) == {1}  # diagnosis_1 Malignant

    again = download_archive(query, out)  # same selection: nothing to do
    assert again.already_complete and len(calls(fake_isic)) == 1
    with pytest.raises(ArchiveToolError, match="another ISIC Archive selection"):
        download_archive(ArchiveQuery(search=SEARCH, limit=5), out)


def test_a_failing_isic_cli_leaves_no_output_folder(
        fake_isic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ISIC_EXIT", "3")
    out = tmp_path / "sel"
    with pytest.raises(ArchiveToolError, match="exit status 3") as info:
        download_archive(ArchiveQuery(search=SEARCH, limit=2), out)
    assert "run the same command again" in str(info.value)
    assert not out.exists()
    assert (tmp_path / ".sel.isic-partial").is_dir()  # kept so isic-cli can resume
    monkeypatch.delenv("FAKE_ISIC_EXIT")
    download_archive(ArchiveQuery(search=SEARCH, limit=2), out)
    assert (out / "metadata.csv").is_file()


def test_offline_fails_fast_with_the_manual_message(
        fake_isic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(archive_module, "API_URL", f"http://127.0.0.1:{port}/api/v2/")
    with pytest.raises(NetworkUnavailableError, match="no network") as info:
        download_archive(ArchiveQuery(search=SEARCH, limit=1), tmp_path / "sel")
    assert "https://gallery.isic-archive.com" in str(info.value)
    assert "run `skinlesion prepare` on them" in str(info.value)
    assert calls(fake_isic) == []  # isic-cli was not started


def test_a_non_empty_output_folder_is_refused(fake_isic: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.txt").write_text("do not touch")
    with pytest.raises(ArchiveToolError, match="not an empty folder"):
        download_archive(ArchiveQuery(limit=1), out)
    assert calls(fake_isic) == []
    assert (out / "mine.txt").read_text() == "do not touch"


def test_cli_archive_json_and_missing_client(
        fake_isic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skinlesion.cli.main import app

    runner = CliRunner()
    out = tmp_path / "sel"
    res = runner.invoke(app, ["download", "archive", "--search", SEARCH, "--collections", "70",
                              "--limit", "2", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["path"] == str(out) and summary["images"] == 2
    assert summary["prepare_format"] == "archive"
    assert calls(fake_isic)[0][:8] == ["image", "download", "--search", SEARCH,
                                       "--collections", "70", "--limit", "2"]

    res = runner.invoke(app, ["download", "archive", "--collections", "7x", "--out",
                              str(tmp_path / "x")])
    assert res.exit_code == 1 and "collection ids" in res.stderr

    monkeypatch.setattr(archive_module, "_default_search_path", lambda: str(tmp_path / "none"))
    res = runner.invoke(app, ["download", "archive", "--limit", "1", "--out",
                              str(tmp_path / "y")])
    assert res.exit_code == 1
    assert "pip install 'skinlesion[archive]'" in res.stderr
