"""Dataset downloads against a real HTTP server on 127.0.0.1 serving small generated zips.

The server supports Range/If-Range like S3, can cut a connection mid-file once, serve a
corrupted body, answer with scripted statuses, and records every request. No test
talks to anything but 127.0.0.1 (DNS failures are simulated with an httpx transport).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from skinlesion.download import (
    MARKER_NAME,
    DatasetRegistry,
    DatasetSpec,
    DataverseFile,
    DataverseSource,
    DownloadError,
    ExtractionError,
    InsufficientSpaceError,
    NetworkUnavailableError,
    RemoteFile,
    RetryPolicy,
    UnknownDatasetError,
    VerificationError,
    default_registry,
    download_dataset,
)
from skinlesion.download.extract import STAMP_NAME, extract_zip
from skinlesion.download.transfer import fetch_file, make_client

FAST = RetryPolicy(attempts=4, connect_attempts=2, backoff=0.0)


def no_sleep(_: float) -> None:
    """Retries in tests do not wait."""


# === The test server ===

class FileServer(ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) and ``json_docs`` (path -> object) on 127.0.0.1."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.json_docs: dict[str, Any] = {}
        self.cut_once: dict[str, int] = {}  # path -> bytes sent before the first cut
        self.corrupt: set[str] = set()
        self.statuses: dict[str, list[int]] = {}  # path -> statuses answered first
        self.honour_if_range = True  # False: behave like a server that ignores If-Range
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def hits(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, h in self.requests if urlsplit(p).path == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FileServer

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        srv = self.server
        path = urlsplit(self.path).path
        with srv.lock:
            srv.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            scripted = srv.statuses.get(path)
            status = scripted.pop(0) if scripted else None
        if status is not None:
            self._send(status, b"scripted failure", {})
            return
        if path in srv.json_docs:
            self._send(200, json.dumps(srv.json_docs[path]).encode(),
                       {"Content-Type": "application/json"})
            return
        body = srv.files.get(path)
        if body is None:
            self._send(404, b"not found", {})
            return
        etag = f'"{hashlib.md5(body).hexdigest()}"'  # S3 single-part style
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range == etag or not srv.honour_if_range):
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(body):
                self._send(416, b"", {"Content-Range": f"bytes */{len(body)}", "ETag": etag})
                return
            status = 206
        payload = bytearray(body[start:])
        if path in srv.corrupt:
            payload[len(payload) // 2] ^= 0xFF
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        cut = srv.cut_once.pop(path, None)
        if cut is not None and cut < len(payload):
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(bytes(payload[:cut]))
            self.wfile.flush()
            self.close_connection = True  # the server closes the socket mid-body
            return
        self._send(status, bytes(payload), headers)


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


# === Generated data ===

def jpeg_bytes(seed: int, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_zip(top: str | None = "train", n: int = 6, first: int = 0, with_csv: bool = True) -> bytes:
    """A zip shaped like udacity's train.zip: class folders under one top folder.

    Images ``first .. first+n-1``; odd ids are melanoma, even ids nevus.
    """
    prefix = f"{top}/" if top else ""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        if top:
            zf.writestr(prefix, b"")
        rows = ["image_id,label"]
        for i in range(first, first + n):
            cls = "melanoma" if i % 2 else "nevus"
            zf.writestr(f"{prefix}{cls}/ISIC_{i:07d}.jpg", jpeg_bytes(i))
            rows.append(f"ISIC_{i:07d},{cls}")
        if with_csv:
            zf.writestr(f"{prefix}labels.csv", "\n".join(rows) + "\n")
        zf.writestr("__MACOSX/._ISIC_0000000.jpg", b"resource fork")
    return buf.getvalue()


CSV = b"image_name,patient_id,target\nISIC_0000000,IP_1,0\nISIC_0000001,IP_2,1\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tiny(server: FileServer) -> dict[str, Any]:
    """A served zip + CSV and a registry describing them with exact sizes and SHA-256."""
    archive = make_zip()
    server.files["/data/train.zip"] = archive
    server.files["/data/ground_truth.csv"] = CSV
    return {"zip": archive, "csv": CSV, "registry": registry_for(server, archive)}


def registry_for(server: FileServer, archive: bytes, *, with_sha: bool = True,
                 urls: tuple[str, ...] | None = None) -> DatasetRegistry:
    return DatasetRegistry.of([DatasetSpec(
        name="tiny", title="Tiny test set", licence="CC-0",
        licence_url="https://creativecommons.org/publicdomain/zero/1.0/",
        citation="generated for the tests", source_page=server.url("/"),
        prepare_format="folders",
        files=(
            RemoteFile("train.zip", urls or (server.url("/data/train.zip"),),
                       size=len(archive) if with_sha else None,
                       sha256=sha256(archive) if with_sha else None,
                       extract_to="train", etag_md5=True),
            RemoteFile("ground_truth.csv", (server.url("/data/ground_truth.csv"),),
                       size=len(CSV), sha256=sha256(CSV)),
        ),
    )])


def run(registry: DatasetRegistry, out: Path, **kwargs: Any):
    kwargs.setdefault("retry", FAST)
    return download_dataset("tiny", out, registry=registry, sleep=no_sleep, **kwargs)


# === The built-in registry ===

def test_builtin_registry_lists_the_issue_datasets_with_sources_and_licences() -> None:
    registry = default_registry()
    assert registry.names() == ["dermatologist-ai", "isic2020", "isic2019", "isic2017",
                                "isic2016", "ham10000"]
    udacity = registry.get("dermatologist-ai")
    base = "https://s3-us-west-1.amazonaws.com/udacity-dlnfd/datasets/skin-cancer/"
    assert [f.urls[0] for f in udacity.files] == [base + n for n in
                                                  ("train.zip", "valid.zip", "test.zip")]
    assert [f.approx_size for f in udacity.files] == [5_300_000_000, 824_500_000,
                                                      5_100_000_000]
    isic2020 = {f.name for f in registry.get("isic2020").files}
    assert {"ISIC_2020_Training_JPEG.zip", "ISIC_2020_Training_GroundTruth_v2.csv",
            "ISIC_2020_Training_Duplicates.csv"} == isic2020
    from skinlesion.data.layouts.detect import FORMATS

    for spec in registry:
        assert spec.licence in {"CC-0", "CC-BY-NC 4.0"}
        assert spec.prepare_format in FORMATS  # a layout `skinlesion prepare` knows
        assert spec.citation and spec.prepare_format and spec.source_page.startswith("https://")
        for f in spec.files:
            assert all(u.startswith("https://") for u in f.urls)
            # No checksum is published for these files: none may be made up.
            assert f.sha256 is None and f.md5 is None
            assert f.approx_size is not None
    ham = registry.get("ham10000")
    assert ham.dataverse is not None and ham.dataverse.persistent_id == "doi:10.7910/DVN/DBW86T"
    assert ham.file_names == ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip",
                              "HAM10000_metadata.csv")


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(UnknownDatasetError, match="known datasets: dermatologist-ai, isic2020"):
        default_registry().get("isic2018")


def test_specs_reject_unsafe_names_and_malformed_checksums() -> None:
    with pytest.raises(ValueError, match="plain file name"):
        RemoteFile("../x.zip", ("https://example.invalid/x.zip",))
    with pytest.raises(ValueError, match="64 lower-case hex"):
        RemoteFile("x.zip", ("https://example.invalid/x.zip",), sha256="abc")
    spec = default_registry().get("isic2016")
    with pytest.raises(ValueError, match="already registered"):
        DatasetRegistry.of([spec, spec])


# === Happy path, re-run ===

def test_download_verifies_extracts_and_writes_the_completion_marker(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    result = run(tiny["registry"], tmp_path)
    root = tmp_path / "tiny"
    assert result.root == root and not result.already_complete
    # train.zip holds train/<class>/...: the top folder is not repeated.
    images = sorted((root / "train").rglob("*.jpg"))
    assert [p.relative_to(root).as_posix() for p in images][:2] == [
        "train/melanoma/ISIC_0000001.jpg", "train/melanoma/ISIC_0000003.jpg"]
    assert len(images) == 6
    with Image.open(images[0]) as im:
        assert im.size == (96, 96)
    assert not (root / "train" / "__MACOSX").exists()
    assert (root / "ground_truth.csv").read_bytes() == CSV
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["dataset"] == "tiny" and marker["prepare_format"] == "folders"
    by_name = {f["name"]: f for f in marker["files"]}
    assert by_name["train.zip"]["sha256"] == sha256(tiny["zip"])
    assert by_name["train.zip"]["size"] == len(tiny["zip"])
    assert by_name["train.zip"]["md5"] == hashlib.md5(tiny["zip"]).hexdigest()
    assert by_name["train.zip"]["extracted_to"] == "train"
    assert by_name["ground_truth.csv"]["sha256"] == sha256(CSV)
    leftovers = [p.name for p in root.iterdir() if p.name.endswith((".part", ".part.json"))
                 or p.name == ".skinlesion-download.json" or ".extracting-" in p.name]
    assert leftovers == []


def test_rerun_of_a_finished_download_makes_no_request(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    run(tiny["registry"], tmp_path)
    seen = len(server.requests)
    again = run(tiny["registry"], tmp_path)
    assert again.already_complete
    assert len(server.requests) == seen
    assert {f["name"] for f in again.marker["files"]} == {"train.zip", "ground_truth.csv"}


def test_two_runs_into_one_folder_do_not_write_at_once(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    import fcntl
    import os

    root = tmp_path / "tiny"
    root.mkdir()
    fd = os.open(root / ".skinlesion-download.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a first run would
    try:
        with pytest.raises(DownloadError, match="another `skinlesion download`"):
            run(tiny["registry"], tmp_path)
    finally:
        os.close(fd)
    assert server.requests == []
    run(tiny["registry"], tmp_path)
    assert (root / MARKER_NAME).is_file()


def test_delete_archives_removes_zips_after_the_marker(
        tiny: dict[str, Any], tmp_path: Path) -> None:
    result = run(tiny["registry"], tmp_path, delete_archives=True)
    assert not (result.root / "train.zip").exists()
    assert (result.root / "train" / "labels.csv").is_file()
    assert json.loads((result.root / MARKER_NAME).read_text())["archives_deleted"] is True


# === Resume ===

def test_resume_after_a_connection_cut_mid_file(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    cut = len(tiny["zip"]) // 2
    server.cut_once["/data/train.zip"] = cut
    run(tiny["registry"], tmp_path)
    hits = server.hits("/data/train.zip")
    assert len(hits) == 2
    assert "range" not in hits[0]
    assert hits[1]["range"] == f"bytes={cut}-"
    assert hits[1]["if-range"] == f'"{hashlib.md5(tiny["zip"]).hexdigest()}"'
    final = tmp_path / "tiny" / "train.zip"
    assert sha256(final.read_bytes()) == sha256(tiny["zip"])


def test_an_interrupted_run_resumes_in_the_next_run(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    cut = len(tiny["zip"]) // 3
    server.cut_once["/data/train.zip"] = cut
    with pytest.raises(DownloadError, match="run the command again to resume"):
        run(tiny["registry"], tmp_path, retry=RetryPolicy(attempts=1, backoff=0.0))
    root = tmp_path / "tiny"
    assert (root / "train.zip.part").stat().st_size == cut
    assert not (root / "train.zip").exists() and not (root / MARKER_NAME).exists()
    run(tiny["registry"], tmp_path)
    hits = server.hits("/data/train.zip")
    assert [h.get("range") for h in hits] == [None, f"bytes={cut}-"]
    assert sha256((root / "train.zip").read_bytes()) == sha256(tiny["zip"])
    assert (root / MARKER_NAME).is_file()


def test_a_part_of_a_changed_remote_file_is_not_spliced(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "train.zip.part").write_bytes(b"bytes of an older version of the file")
    (root / "train.zip.part.json").write_text(json.dumps(
        {"url": server.url("/data/train.zip"), "validator": '"0123"', "total": 999}))
    run(tiny["registry"], tmp_path)
    hit = server.hits("/data/train.zip")[0]
    assert hit["if-range"] == '"0123"'  # asked to resume only if unchanged; it was not
    assert sha256((root / "train.zip").read_bytes()) == sha256(tiny["zip"])


def test_a_changed_file_is_refetched_even_if_the_server_ignores_if_range(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    server.honour_if_range = False
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "train.zip.part").write_bytes(b"bytes of an older version of the file")
    (root / "train.zip.part.json").write_text(json.dumps(
        {"url": server.url("/data/train.zip"), "validator": '"0123"', "total": 999}))
    run(tiny["registry"], tmp_path)
    hits = server.hits("/data/train.zip")
    assert [h.get("range") for h in hits] == ["bytes=37-", None]  # spotted by its ETag
    assert sha256((root / "train.zip").read_bytes()) == sha256(tiny["zip"])


def test_a_complete_part_left_before_its_rename_is_not_downloaded_again(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "train.zip.part").write_bytes(tiny["zip"])
    (root / "train.zip.part.json").write_text(json.dumps(
        {"url": server.url("/data/train.zip"),
         "validator": f'"{hashlib.md5(tiny["zip"]).hexdigest()}"'}))
    run(tiny["registry"], tmp_path)
    assert server.hits("/data/train.zip")[0]["range"] == f"bytes={len(tiny['zip'])}-"
    assert sha256((root / "train.zip").read_bytes()) == sha256(tiny["zip"])


def test_server_errors_are_retried_with_exponential_backoff(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    server.statuses["/data/ground_truth.csv"] = [503, 500]
    waits: list[float] = []
    download_dataset("tiny", tmp_path, registry=tiny["registry"], sleep=waits.append,
                     retry=RetryPolicy(attempts=4, backoff=0.5))
    assert waits == [0.5, 1.0]
    assert len(server.hits("/data/ground_truth.csv")) == 3


def test_retries_are_bounded(tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    server.statuses["/data/ground_truth.csv"] = [503] * 10
    with pytest.raises(DownloadError, match="HTTP 503"):
        run(tiny["registry"], tmp_path, retry=RetryPolicy(attempts=3, backoff=0.0))
    assert len(server.hits("/data/ground_truth.csv")) == 3
    assert not (tmp_path / "tiny" / MARKER_NAME).exists()


def test_a_missing_file_falls_back_to_the_mirror(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    registry = registry_for(server, tiny["zip"], urls=(server.url("/moved/train.zip"),
                                                       server.url("/data/train.zip")))
    result = run(registry, tmp_path)
    record = next(f for f in result.marker["files"] if f["name"] == "train.zip")
    assert record["url"] == server.url("/data/train.zip")
    assert len(server.hits("/moved/train.zip")) == 1


# === Verification ===

def test_a_corrupt_download_is_detected_and_not_left_as_complete(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    server.corrupt.add("/data/train.zip")
    with pytest.raises(VerificationError, match="SHA-256") as info:
        run(tiny["registry"], tmp_path)
    assert "deleted" in str(info.value)
    root = tmp_path / "tiny"
    assert not (root / MARKER_NAME).exists()
    assert not (root / "train.zip").exists() and not (root / "train.zip.part").exists()
    assert not (root / "train").exists()
    server.corrupt.clear()
    run(tiny["registry"], tmp_path)  # the next run starts over and succeeds
    assert server.hits("/data/train.zip")[-1].get("range") is None
    assert sha256((root / "train.zip").read_bytes()) == sha256(tiny["zip"])


def test_the_s3_md5_etag_catches_corruption_when_no_checksum_is_published(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    registry = registry_for(server, tiny["zip"], with_sha=False)
    server.corrupt.add("/data/train.zip")
    with pytest.raises(VerificationError, match="ETag"):
        run(registry, tmp_path)
    assert not (tmp_path / "tiny" / "train.zip").exists()


def test_a_size_different_from_the_published_one_stops_before_downloading(
        server: FileServer, tmp_path: Path) -> None:
    server.files["/f.csv"] = CSV
    remote = RemoteFile("f.csv", (server.url("/f.csv"),), size=len(CSV) + 1)
    with make_client() as client, pytest.raises(VerificationError, match="not the published"):
        fetch_file(remote, tmp_path, client, retry=FAST, sleep=no_sleep)
    assert not (tmp_path / "f.csv").exists()


# === Extraction ===

def test_a_download_that_is_not_a_zip_is_deleted_when_no_checksum_vouches_for_it(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path) -> None:
    from skinlesion.download import CorruptArchiveError

    server.files["/data/train.zip"] = b"<html>captive portal login page</html>"
    registry = registry_for(server, tiny["zip"], with_sha=False)
    with pytest.raises(CorruptArchiveError, match="run the command again"):
        run(registry, tmp_path)
    root = tmp_path / "tiny"
    assert not (root / "train.zip").exists() and not (root / "train").exists()
    assert not (root / MARKER_NAME).exists()
    server.files["/data/train.zip"] = tiny["zip"]
    run(registry, tmp_path)
    assert len(list((root / "train").rglob("*.jpg"))) == 6


def test_an_interrupted_extraction_leaves_no_complete_looking_folder(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = zipfile.ZipFile.open
    opened: list[str] = []

    def dying_open(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(name))
        if len(opened) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the extraction
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", dying_open)
    with pytest.raises(KeyboardInterrupt):
        run(tiny["registry"], tmp_path)
    root = tmp_path / "tiny"
    assert not (root / "train").exists()
    assert [p.name for p in root.iterdir() if ".extracting-" in p.name] == []
    assert not (root / MARKER_NAME).exists()
    monkeypatch.setattr(zipfile.ZipFile, "open", real_open)
    before = len(server.hits("/data/train.zip"))
    run(tiny["registry"], tmp_path)
    assert len(server.hits("/data/train.zip")) == before  # the verified zip is reused
    assert len(list((root / "train").rglob("*.jpg"))) == 6
    assert (root / "train" / STAMP_NAME).is_file()


def test_a_killed_extraction_is_cleaned_up_on_the_next_run(
        tiny: dict[str, Any], tmp_path: Path) -> None:
    stale = tmp_path / "tiny" / ".train.extracting-k1ll3d"
    (stale / "melanoma").mkdir(parents=True)
    (stale / "melanoma" / "half.jpg").write_bytes(b"\xff\xd8")
    run(tiny["registry"], tmp_path)
    assert not stale.exists()
    assert (tmp_path / "tiny" / "train" / "melanoma").is_dir()


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt",
                                    "C:/evil.txt"])
def test_zip_slip_members_are_rejected(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/fine.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(member), b"evil")
    dest = tmp_path / "out" / "bad"
    with pytest.raises(ExtractionError, match="unsafe member"):
        extract_zip(archive, dest)
    assert not dest.exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert list((tmp_path / "out").iterdir()) == []


def test_symlink_members_are_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("top/link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ExtractionError, match="symbolic link"):
        extract_zip(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_flat_zip_extracts_into_its_folder_and_a_corrupt_zip_is_reported(
        tmp_path: Path) -> None:
    archive = tmp_path / "flat.zip"
    archive.write_bytes(make_zip(top=None, n=2))
    dest = extract_zip(archive, tmp_path / "flat", archive_sha256="x")
    assert sorted(p.name for p in dest.rglob("*.jpg")) == ["ISIC_0000000.jpg", "ISIC_0000001.jpg"]
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ExtractionError, match="not a valid zip"):
        extract_zip(broken, tmp_path / "broken")


# === Offline and disk space ===

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_gives_the_manual_download_message(tmp_path: Path) -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}/data/train.zip"
    registry = DatasetRegistry.of([DatasetSpec(
        name="tiny", title="t", licence="CC-0", licence_url="u", citation="c",
        source_page="p", prepare_format="folders",
        files=(RemoteFile("train.zip", (url,), extract_to="train"),
               RemoteFile("gt.csv", (f"http://127.0.0.1:{port}/gt.csv",))))])
    with pytest.raises(NetworkUnavailableError) as info:
        run(registry, tmp_path)
    message = str(info.value)
    assert message.startswith("no network")
    assert ("download the files by hand from URL and run `skinlesion prepare` on them"
            in message)
    assert url in message and f"http://127.0.0.1:{port}/gt.csv" in message
    assert not (tmp_path / "tiny" / MARKER_NAME).exists()


def test_a_dns_failure_is_reported_as_no_network(tmp_path: Path) -> None:
    def unresolvable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution",
                                 request=request)

    registry = DatasetRegistry.of([default_registry().get("isic2016")])
    with httpx.Client(transport=httpx.MockTransport(unresolvable)) as client, \
            pytest.raises(NetworkUnavailableError, match="name resolution") as info:
        download_dataset("isic2016", tmp_path, registry=registry, client=client, retry=FAST,
                         sleep=no_sleep)
    assert ("https://isic-archive.s3.amazonaws.com/challenges/2016/"
            "ISBI2016_ISIC_Part3_Training_Data.zip") in str(info.value)


def test_not_enough_disk_space_fails_before_any_request(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil as real_shutil

    from skinlesion.download import dataset as dataset_module

    usage = real_shutil.disk_usage(tmp_path)
    monkeypatch.setattr(dataset_module.shutil, "disk_usage",
                        lambda _: usage._replace(free=len(tiny["zip"])))
    with pytest.raises(InsufficientSpaceError, match="not enough disk space") as info:
        run(tiny["registry"], tmp_path)
    assert "to download" in str(info.value) and "to extract" in str(info.value)
    assert server.requests == []


# === Dataverse (HAM10000-shaped) ===

def test_dataverse_files_are_resolved_and_verified_with_their_md5(
        server: FileServer, tmp_path: Path) -> None:
    part = make_zip(top=None, n=2)
    metadata = b"lesion_id,image_id,dx,dx_type,age,sex,localization\nHAM_1,ISIC_0000000,mel,histo,50,male,back\n"
    pid = "doi:10.5072/FK2/TEST"
    server.json_docs["/api/datasets/:persistentId/versions/:latest-published/files"] = {
        "status": "OK", "data": [
            {"label": "HAM10000_images_part_1.zip", "dataFile": {
                "id": 11, "filename": "HAM10000_images_part_1.zip", "filesize": len(part),
                "checksum": {"type": "MD5", "value": hashlib.md5(part).hexdigest()}}},
            {"label": "HAM10000_metadata.tab", "dataFile": {
                "id": 12, "filename": "HAM10000_metadata.tab", "filesize": 9999,
                "originalFileFormat": "text/csv", "originalFileName": "HAM10000_metadata.csv",
                "originalFileSize": len(metadata),
                "md5": hashlib.md5(metadata).hexdigest()}},
        ]}
    server.files["/api/access/datafile/11"] = part
    server.files["/api/access/datafile/12"] = metadata
    registry = DatasetRegistry.of([DatasetSpec(
        name="ham", title="HAM-like", licence="CC-BY-NC 4.0", licence_url="u", citation="c",
        source_page="p", prepare_format="ham10000",
        dataverse=DataverseSource(server.url(""), pid, files=(
            DataverseFile("HAM10000_images_part_1", "HAM10000_images_part_1.zip",
                          extract_to="HAM10000_images_part_1"),
            DataverseFile("HAM10000_metadata", "HAM10000_metadata.csv", original=True))))])
    result = download_dataset("ham", tmp_path, registry=registry, retry=FAST, sleep=no_sleep)
    assert (result.root / "HAM10000_metadata.csv").read_bytes() == metadata
    assert len(list((result.root / "HAM10000_images_part_1").glob("*/*.jpg"))) == 2
    listing = [p for p, _ in server.requests if "/api/datasets/" in p]
    assert listing == ["/api/datasets/:persistentId/versions/:latest-published/files"
                       "?persistentId=doi:10.5072/FK2/TEST"]
    assert any(p == "/api/access/datafile/12?format=original" for p, _ in server.requests)
    records = {f["name"]: f for f in result.marker["files"]}
    assert records["HAM10000_metadata.csv"]["md5"] == hashlib.md5(metadata).hexdigest()
    prepared = prepare_downloaded(result, tmp_path / "prepared")
    assert prepared.manifest["image_id"].tolist() == ["ISIC_0000000"]
    assert prepared.manifest["label"].tolist() == [1]  # dx mel


# === From download to prepare ===

def prepare_downloaded(result: Any, out: Path) -> Any:
    """Run the data engineer's `prepare` on a download, with the format the registry names."""
    from skinlesion.data.prepare import PrepareSettings, prepare

    return prepare([result.root], out, PrepareSettings(fmt=result.spec.prepare_format, size=32,
                                                       workers=1))


def test_a_udacity_shaped_download_is_prepare_ready(server: FileServer, tmp_path: Path) -> None:
    files = []
    for split, n, first in (("train", 6, 0), ("valid", 2, 6), ("test", 4, 8)):
        server.files[f"/skin-cancer/{split}.zip"] = make_zip(top=split, n=n, first=first,
                                                             with_csv=False)
        files.append(RemoteFile(f"{split}.zip", (server.url(f"/skin-cancer/{split}.zip"),),
                                extract_to=split, etag_md5=True))
    registry = DatasetRegistry.of([DatasetSpec(
        name="dermatologist-ai", title="t", licence="CC-0", licence_url="u", citation="c",
        source_page="p", prepare_format="folders", files=tuple(files))])
    result = download_dataset("dermatologist-ai", tmp_path / "raw", registry=registry,
                              retry=FAST, sleep=no_sleep)
    manifest = prepare_downloaded(result, tmp_path / "prepared").manifest
    assert manifest["split"].value_counts().to_dict() == {"train": 6, "test": 4, "val": 2}
    # melanoma/ -> 1, nevus/ -> 0 (odd ids are melanoma in make_zip)
    labels = dict(zip(manifest["image_id"], manifest["label"], strict=True))
    assert labels["ISIC_0000001"] == 1 and labels["ISIC_0000000"] == 0


def test_an_isic2020_shaped_download_is_prepare_ready(server: FileServer, tmp_path: Path) -> None:
    n = 8
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:  # the real zip holds train/ISIC_*.jpg
        for i in range(n):
            zf.writestr(f"train/ISIC_{i:07d}.jpg", jpeg_bytes(i, 48))
    header = ("image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,"
              "diagnosis,benign_malignant,target")
    rows = [f"ISIC_{i:07d},IP_{i % 4},IL_{i},female,45,torso,"
            f"{'melanoma,malignant,1' if i % 3 == 0 else 'nevus,benign,0'}" for i in range(n)]
    served = {"ISIC_2020_Training_JPEG.zip": archive.getvalue(),
              "ISIC_2020_Training_GroundTruth_v2.csv": "\n".join([header, *rows]).encode(),
              "ISIC_2020_Training_Duplicates.csv":
                  b"image_name_1,image_name_2\nISIC_0000002,ISIC_0000005\n"}
    for name, data in served.items():
        server.files[f"/challenges/2020/{name}"] = data
    spec = default_registry().get("isic2020")
    local = DatasetSpec(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__},
                           "files": tuple(RemoteFile(
                               f.name, (server.url(f"/challenges/2020/{f.name}"),),
                               extract_to=f.extract_to, etag_md5=True) for f in spec.files)})
    result = download_dataset("isic2020", tmp_path / "raw", registry=DatasetRegistry.of([local]),
                              retry=FAST, sleep=no_sleep)
    assert sorted(p.name for p in (result.root / "ISIC_2020_Training_JPEG").iterdir())[:2] == [
        ".skinlesion-extracted.json", "ISIC_0000000.jpg"]
    prepared = prepare_downloaded(result, tmp_path / "prepared")
    assert len(prepared.manifest) == n - 1  # the listed duplicate is dropped
    assert "ISIC_0000005" not in set(prepared.manifest["image_id"])
    assert prepared.manifest.set_index("image_id")["label"]["ISIC_0000003"] == 1


# === CLI ===

def test_cli_list_shows_names_sizes_and_licences() -> None:
    from skinlesion.cli.main import app

    res = CliRunner().invoke(app, ["download", "--list"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    for text in ("dermatologist-ai", "isic2020", "ham10000", "archive", "CC-BY-NC 4.0",
                 "11.2 GB", "23.0 GB"):
        assert text in res.stdout
    res = CliRunner().invoke(app, ["download", "--list", "--json"])
    listed = json.loads(res.stdout)
    assert [d["name"] for d in listed] == default_registry().names()
    assert listed[0]["total_size"] == 11_224_500_000


def test_cli_downloads_then_does_nothing_and_reports_offline(
        tiny: dict[str, Any], server: FileServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from skinlesion.cli.main import app
    from skinlesion.download import catalog as registry_module

    monkeypatch.setattr(registry_module, "default_registry", lambda: tiny["registry"])
    runner = CliRunner()
    res = runner.invoke(app, ["download", "tiny", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["dataset"] == "tiny" and summary["already_complete"] is False
    assert "skinlesion prepare" in res.stderr
    seen = len(server.requests)
    res = runner.invoke(app, ["download", "tiny", "--out", str(tmp_path), "--json"])
    assert json.loads(res.stdout)["already_complete"] is True
    assert len(server.requests) == seen

    import time

    monkeypatch.setattr(time, "sleep", no_sleep)
    offline = registry_for(server, tiny["zip"], urls=(f"http://127.0.0.1:{closed_port()}/x.zip",))
    monkeypatch.setattr(registry_module, "default_registry", lambda: offline)
    res = runner.invoke(app, ["download", "tiny", "--out", str(tmp_path / "other")])
    assert res.exit_code == 1
    assert "no network" in res.stderr and "skinlesion prepare" in res.stderr
    res = runner.invoke(app, ["download", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "known datasets: tiny" in res.stderr
