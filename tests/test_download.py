"""csr.download: checksums, resumable download, safe extraction, ensure_dataset. No network: tiny
archives built in tmp_path, fake openers, and a local HTTP server bound to 127.0.0.1 only."""

import csv
import dataclasses
import hashlib
import http.server
import io
import json
import shutil
import socket
import tarfile
import threading
import urllib.error
import zipfile
from pathlib import Path

import pytest

from csr import download as dl

REPO = Path(__file__).resolve().parents[1]
CONTENT = bytes(range(256)) * 40  # 10,240 bytes


# ------------------------------------------------------------------------------------- fixtures
def esc_tree(base: Path, rows: int = 3) -> Path:
    """ESC-50-master/{meta/esc50.csv, audio/*.wav} with `rows` clips (bytes are not audio)."""
    top = base / "ESC-50-master"
    (top / "meta").mkdir(parents=True)
    (top / "audio").mkdir()
    with open(top / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for i in range(rows):
            name = f"1-{100 + i}-A-0.wav"
            w.writerow([name, 1, 0, "dog", True, 100 + i, "A"])
            (top / "audio" / name).write_bytes(b"RIFF" + bytes([i]) * 10)
    (top / "README.md").write_text("fake\n")
    return top


def us8k_tree(base: Path, rows: int = 2) -> Path:
    top = base / "UrbanSound8K"
    (top / "metadata").mkdir(parents=True)
    with open(top / "metadata" / "UrbanSound8K.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID",
                    "class"])
        for i in range(rows):
            name = f"{100 + i}-3-0-0.wav"
            fold = i % 2 + 1
            w.writerow([name, 100 + i, 0.0, 1.0, 1, fold, 3, "dog_bark"])
            (top / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
            (top / "audio" / f"fold{fold}" / name).write_bytes(b"RIFF" + bytes([i]) * 10)
    return top


def make_zip(tree_parent: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree_parent.rglob("*")):
            zf.write(path, path.relative_to(tree_parent).as_posix())
    return archive


def make_tar(tree_parent: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(tree_parent.iterdir()):
            tf.add(path, path.name)
    return archive


class FakeResponse(io.BytesIO):
    """What urlopen returns, enough for download(): status, headers, read(n), context manager."""

    def __init__(self, data: bytes, status: int = 200, headers=None, fail_after=None):
        super().__init__(data)
        self.status = status
        self.headers = {"Content-Length": str(len(data)), **(headers or {})}
        self.fail_after = fail_after

    def getcode(self):
        return self.status

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        if self.fail_after is not None:
            n = min(n, self.fail_after - self.tell())
        return super().read(n)


def range_opener(content: bytes, log: list, fail_after=None):
    """Fake opener honouring 'Range: bytes=N-' like a real server (206 + Content-Range)."""

    def opener(request, timeout):
        log.append(request.get_header("Range"))
        rng = request.get_header("Range")
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            if start >= len(content):
                raise urllib.error.HTTPError(request.full_url, 416, "Range Not Satisfiable", {},
                                             None)
            return FakeResponse(content[start:], 206, {
                "Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"}, fail_after)
        return FakeResponse(content, 200, fail_after=fail_after)

    return opener


@pytest.fixture
def http_server():
    """A Range-capable static server on 127.0.0.1 (never a public interface), shut down after."""
    served = {"body": b"", "ranges": [], "sent": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body, rng = served["body"], self.headers.get("Range")
            served["ranges"].append(rng)
            start = int(rng.split("=")[1].rstrip("-")) if rng else 0
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])
            served["sent"] += len(body) - start

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/archive.bin"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------------- checksums
def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(CONTENT * 300)  # > one 1 MiB chunk, so chunking is exercised
    assert dl.file_digest(path, "md5") == hashlib.md5(CONTENT * 300).hexdigest()
    assert dl.file_digest(path, "sha256") == hashlib.sha256(CONTENT * 300).hexdigest()


def test_verify_checksum_pass_and_fail_names_file_and_both_hashes(tmp_path):
    path = tmp_path / "UrbanSound8K.tar.gz"
    path.write_bytes(CONTENT)
    good = hashlib.md5(CONTENT).hexdigest()
    dl.verify_checksum(path, "md5", good.upper())  # case-insensitive, no error
    wrong = "0" * 32
    with pytest.raises(dl.ChecksumError) as err:
        dl.verify_checksum(path, "md5", wrong)
    msg = str(err.value)
    assert str(path) in msg and wrong in msg and good in msg


def test_recorded_us8k_checksum_is_zenodos():
    spec = dl.DATASETS["us8k"]
    assert spec.md5 == "9aa69802bbf37fb986f71ec1483a196e" and spec.size == 6_023_741_708
    assert spec.url == "https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz"
    assert dl.DATASETS["esc50"].url == "https://github.com/karolpiczak/ESC-50/archive/master.zip"


# -------------------------------------------------------------------------------------- download
def test_resume_part_file_over_http_range(tmp_path, http_server):
    served, url = http_server
    served["body"] = CONTENT
    dest = tmp_path / "archive.bin"
    (tmp_path / "archive.bin.part").write_bytes(CONTENT[:4000])
    assert dl.download(url, dest, progress=False, timeout=5) == dest
    assert dest.read_bytes() == CONTENT
    assert served["ranges"] == ["bytes=4000-"] and served["sent"] == len(CONTENT) - 4000
    assert not (tmp_path / "archive.bin.part").exists()


def test_fresh_download_over_http_sends_no_range(tmp_path, http_server):
    served, url = http_server
    served["body"] = CONTENT
    dest = dl.download(url, tmp_path / "a.bin", progress=False, timeout=5)
    assert dest.read_bytes() == CONTENT and served["ranges"] == [None]


def test_restart_from_zero_when_server_ignores_range(tmp_path):
    log = []
    (tmp_path / "a.bin.part").write_bytes(b"garbage!" * 10)

    def ignoring(request, timeout):
        log.append(request.get_header("Range"))
        return FakeResponse(CONTENT, 200)  # full body despite the Range header

    dest = dl.download("https://example.invalid/a.bin", tmp_path / "a.bin", opener=ignoring,
                       progress=False)
    assert log == ["bytes=80-"] and dest.read_bytes() == CONTENT


def test_interrupted_download_keeps_part_and_next_call_resumes(tmp_path):
    log = []
    dest = tmp_path / "a.bin"
    with pytest.raises(dl.DownloadError, match="rerun to resume"):
        dl.download("https://example.invalid/a.bin", dest,
                    opener=range_opener(CONTENT, log, fail_after=3000), progress=False,
                    chunk_bytes=1000)
    assert (tmp_path / "a.bin.part").read_bytes() == CONTENT[:3000] and not dest.exists()
    dl.download("https://example.invalid/a.bin", dest, opener=range_opener(CONTENT, log),
                progress=False)
    assert log == [None, "bytes=3000-"] and dest.read_bytes() == CONTENT


def test_416_means_part_already_complete(tmp_path):
    log = []
    (tmp_path / "a.bin.part").write_bytes(CONTENT)
    dest = dl.download("https://example.invalid/a.bin", tmp_path / "a.bin",
                       opener=range_opener(CONTENT, log), progress=False)
    assert log == [f"bytes={len(CONTENT)}-"] and dest.read_bytes() == CONTENT


def test_existing_download_is_not_fetched_again(tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(CONTENT)

    def must_not_open(request, timeout):
        raise AssertionError("opened the network for a file that is already there")

    assert dl.download("https://example.invalid/a.bin", dest, opener=must_not_open) == dest


@pytest.mark.parametrize("error, reason", [
    (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")),
     "Name or service not known"),
    (socket.timeout("timed out"), "timed out"),
])
def test_offline_message_names_url_reason_and_path(tmp_path, monkeypatch, error, reason):
    def offline(*args, **kwargs):
        raise error

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)  # the default opener
    url = "https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz"
    dest = tmp_path / "UrbanSound8K.tar.gz"
    with pytest.raises(dl.DownloadError) as err:
        dl.download(url, dest, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"cannot reach {url}: ")
    assert reason in msg and msg.endswith(f"; download it by hand to {dest} and rerun")


def test_http_error_is_reported_with_code(tmp_path):
    def not_found(request, timeout):
        raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)

    with pytest.raises(dl.DownloadError, match="HTTP 404 Not Found"):
        dl.download("https://example.invalid/x.zip", tmp_path / "x.zip", opener=not_found)


# ------------------------------------------------------------------------------------ extraction
def test_safe_extract_zip_and_tar_reproduce_the_tree(tmp_path):
    esc_tree(tmp_path / "src")
    for archive in (make_zip(tmp_path / "src", tmp_path / "a.zip"),
                    make_tar(tmp_path / "src", tmp_path / "a.tar.gz")):
        out = dl.safe_extract(archive, tmp_path / ("out_" + archive.name))
        got = {p.relative_to(out).as_posix(): p.read_bytes()
               for p in out.rglob("*") if p.is_file()}
        want = {p.relative_to(tmp_path / "src").as_posix(): p.read_bytes()
                for p in (tmp_path / "src").rglob("*") if p.is_file()}
        assert got == want


def _zip_with(archive: Path, name: str, mode: int = 0o100644, data: bytes = b"x") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ESC-50-master/meta/ok.txt", b"fine")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, data)
    return archive


def _tar_with(archive: Path, member: tarfile.TarInfo) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        ok = tarfile.TarInfo("UrbanSound8K/ok.txt")
        ok.size = 4
        tf.addfile(ok, io.BytesIO(b"fine"))
        tf.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return archive


def _tarinfo(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("build, member, problem", [
    (lambda p: _zip_with(p, "/etc/evil"), "/etc/evil", "absolute path"),
    (lambda p: _zip_with(p, "ESC-50-master/../../evil"), "ESC-50-master/../../evil", "'..'"),
    (lambda p: _zip_with(p, "ESC-50-master/link", 0o120777, b"/etc/passwd"),
     "ESC-50-master/link", "symlink"),
    (lambda p: _tar_with(p, _tarinfo("/tmp/evil")), "/tmp/evil", "absolute path"),
    (lambda p: _tar_with(p, _tarinfo("UrbanSound8K/../../evil")), "UrbanSound8K/../../evil",
     "'..'"),
    (lambda p: _tar_with(p, _tarinfo("UrbanSound8K/l", tarfile.SYMTYPE, "/etc/passwd")),
     "UrbanSound8K/l", "symlink"),
    (lambda p: _tar_with(p, _tarinfo("UrbanSound8K/h", tarfile.LNKTYPE, "UrbanSound8K/ok.txt")),
     "UrbanSound8K/h", "hardlink"),
    (lambda p: _tar_with(p, _tarinfo("UrbanSound8K/dev", tarfile.CHRTYPE)), "UrbanSound8K/dev",
     "device"),
])
def test_unsafe_members_are_rejected_by_name(tmp_path, build, member, problem):
    archive = build(tmp_path / "bad.archive")
    with pytest.raises(dl.UnsafeArchiveError) as err:
        dl.safe_extract(archive, tmp_path / "out")
    msg = str(err.value)
    assert str(archive) in msg and repr(member) in msg and problem in msg
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


def test_not_an_archive_is_a_clear_error(tmp_path):
    bogus = tmp_path / "ESC-50-master.zip"
    bogus.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(dl.DownloadError, match="not a zip or tar archive"):
        dl.safe_extract(bogus, tmp_path / "out")


# -------------------------------------------------------------------------------- ensure_dataset
@pytest.fixture
def esc_archive(tmp_path, monkeypatch):
    """ESC-50-like zip served from a file:// URL; the spec expects its 3 rows."""
    esc_tree(tmp_path / "src")
    archive = make_zip(tmp_path / "src", tmp_path / "master.zip")
    monkeypatch.setitem(dl.DATASETS, "esc50", dataclasses.replace(
        dl.DATASETS["esc50"], url=archive.as_uri(), rows=3))
    return archive


def test_ensure_esc50_unpacks_marks_and_records_sha256(tmp_path, esc_archive):
    root = tmp_path / "root"
    target = dl.ensure_dataset("esc50", root, progress=False)
    assert target == root.resolve() / "ESC-50"
    assert (target / "meta" / "esc50.csv").is_file()
    assert len(list((target / "audio").iterdir())) == 3
    sha = hashlib.sha256(esc_archive.read_bytes()).hexdigest()
    assert (root / "ESC-50-master.zip.sha256").read_text() == f"{sha}  ESC-50-master.zip\n"
    assert json.loads((target / dl.MARKER).read_text())["sha256"] == sha
    assert sorted(p.name for p in root.iterdir()) == [
        "ESC-50", "ESC-50-master.zip", "ESC-50-master.zip.sha256"]  # no staging left


def test_second_call_does_nothing(tmp_path, esc_archive, monkeypatch):
    root = tmp_path / "root"
    target = dl.ensure_dataset("esc50", root, progress=False)
    marker_time = (target / dl.MARKER).stat().st_mtime_ns

    def forbidden(*args, **kwargs):
        raise AssertionError("a complete dataset was fetched or unpacked again")

    for name in ("download", "safe_extract", "file_digest"):
        monkeypatch.setattr(dl, name, forbidden)
    assert dl.ensure_dataset("esc50", root, progress=False) == target
    assert (target / dl.MARKER).stat().st_mtime_ns == marker_time


def test_recorded_sha256_catches_a_changed_archive(tmp_path, esc_archive):
    root = tmp_path / "root"
    target = dl.ensure_dataset("esc50", root, progress=False)
    shutil.rmtree(target)
    with open(root / "ESC-50-master.zip", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(dl.ChecksumError, match="sha256 mismatch"):
        dl.ensure_dataset("esc50", root, progress=False)
    assert not target.exists()


def test_incomplete_content_never_looks_complete(tmp_path, monkeypatch):
    esc_tree(tmp_path / "src", rows=3)
    (tmp_path / "src" / "ESC-50-master" / "audio" / "1-101-A-0.wav").unlink()
    archive = make_zip(tmp_path / "src", tmp_path / "master.zip")
    monkeypatch.setitem(dl.DATASETS, "esc50", dataclasses.replace(
        dl.DATASETS["esc50"], url=archive.as_uri(), rows=3))
    root = tmp_path / "root"
    (root / ".ESC-50.partial" / "junk").mkdir(parents=True)  # left by a killed earlier run
    missing = r"1 audio files .* missing, e\.g\. .*1-101-A-0\.wav"
    with pytest.raises(dl.DownloadError, match=missing):
        dl.ensure_dataset("esc50", root, progress=False)
    assert not (root / "ESC-50").exists() and not (root / ".ESC-50.partial").exists()


def test_ensure_us8k_checks_md5(tmp_path, monkeypatch):
    us8k_tree(tmp_path / "src")
    archive = make_tar(tmp_path / "src", tmp_path / "UrbanSound8K.tar.gz")
    good = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = dataclasses.replace(dl.DATASETS["us8k"], url=archive.as_uri(), rows=2,
                               size=archive.stat().st_size, md5="f" * 32)
    monkeypatch.setitem(dl.DATASETS, "us8k", spec)
    root = tmp_path / "root"
    with pytest.raises(dl.ChecksumError) as err:
        dl.ensure_dataset("us8k", root, progress=False)
    assert good in str(err.value) and "f" * 32 in str(err.value)
    assert str(root.resolve() / "UrbanSound8K.tar.gz") in str(err.value)
    assert not (root / "UrbanSound8K").exists()
    monkeypatch.setitem(dl.DATASETS, "us8k", dataclasses.replace(spec, md5=good))
    target = dl.ensure_dataset("us8k", root, progress=False)  # archive reused, now verified
    assert (target / "audio" / "fold2" / "101-3-0-0.wav").is_file()
    assert (target / "metadata" / "UrbanSound8K.csv").is_file() and (target / dl.MARKER).is_file()


def test_wrong_size_is_rejected_before_hashing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "UrbanSound8K.tar.gz").write_bytes(CONTENT)
    with pytest.raises(dl.ChecksumError, match=f"size {len(CONTENT)} bytes, expected 6023741708"):
        dl.ensure_dataset("us8k", root, progress=False)


def test_hand_unpacked_folder_is_checked_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setitem(dl.DATASETS, "esc50", dataclasses.replace(dl.DATASETS["esc50"], rows=3))
    root = tmp_path / "root"
    top = esc_tree(root)
    top.rename(root / "ESC-50")
    assert dl.ensure_dataset("esc50", root, progress=False) == root.resolve() / "ESC-50"
    assert (root / "ESC-50" / dl.MARKER).is_file()
    (root / "ESC-50" / dl.MARKER).unlink()
    (root / "ESC-50" / "audio" / "1-100-A-0.wav").unlink()
    with pytest.raises(dl.DownloadError, match="exists but is not a complete esc50 dataset"):
        dl.ensure_dataset("esc50", root, progress=False)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'esc100'"):
        dl.ensure_dataset("esc100", tmp_path)


def test_cli_reports_offline_and_exits_1(tmp_path, monkeypatch, capsys):
    from csr.cli import download as cli

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    assert cli.run(["--dataset", "esc50", "--root", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach https://github.com/karolpiczak/ESC-50/archive/master.zip" in err
    assert str(tmp_path.resolve() / "ESC-50-master.zip") in err
