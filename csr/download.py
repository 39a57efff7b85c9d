"""Fetch, verify and unpack the official ESC-50 and UrbanSound8K archives.

Why this shape: the archives are large (US8K is 6 GB), so downloads resume from a ``.part`` file via
HTTP Range; a corrupt or truncated archive must never turn into a dataset that *looks* complete, so
archives are checksummed, extracted into a staging folder and moved into place with one rename,
and only a folder carrying the completion marker is trusted. Extraction refuses members that could
write outside the staging folder (absolute paths, '..', links, devices).

Layout under ``root`` (one folder per dataset, archives kept beside it)::

    root/ESC-50/{audio/*.wav, meta/esc50.csv, .csr_complete}
    root/ESC-50-master.zip           root/ESC-50-master.zip.sha256  (recorded on first use)
    root/UrbanSound8K/{audio/fold1..fold10/*.wav, metadata/UrbanSound8K.csv, .csr_complete}
    root/UrbanSound8K.tar.gz         (md5 published by Zenodo, checked every time it is unpacked)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Optional

from csr.errors import UserError
from csr.progress import bar as progress_bar

MARKER = ".csr_complete"
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60.0


class DownloadError(UserError, RuntimeError):
    """A dataset could not be fetched or unpacked; the message says which file and what to do."""


class ChecksumError(DownloadError):
    """An archive's size or hash differs from the expected one."""


class UnsafeArchiveError(DownloadError):
    """An archive member would escape the extraction folder or is not a plain file/folder."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where an official dataset comes from and how to recognise a complete copy of it."""

    name: str
    url: str
    archive: str  # archive file name under root
    top_folder: str  # the single folder inside the archive
    folder: str  # dataset root under root (what the loaders are given)
    csv: str  # metadata table, relative to the dataset root
    rows: int  # data rows the metadata table must have
    audio_path: Callable[[dict], str]  # a metadata row -> audio file relative to the dataset root
    md5: Optional[str] = None  # published checksum, when one exists
    size: Optional[int] = None  # published size in bytes, when known
    approx_size: Optional[int] = None  # for messages when no exact size is published


def _esc50_audio(row: dict) -> str:
    return f"audio/{row['filename']}"


def _us8k_audio(row: dict) -> str:
    return f"audio/fold{row['fold']}/{row['slice_file_name']}"


# The expected checksums live here, in the repository. ESC-50's GitHub branch archive has no stable
# published checksum (it is regenerated when the branch changes), so its content is verified instead
# and the sha256 of the copy obtained is recorded beside it (``<archive>.sha256``) for later runs.
DATASETS = {
    "esc50": DatasetSpec(
        name="esc50",
        url="https://github.com/karolpiczak/ESC-50/archive/master.zip",
        archive="ESC-50-master.zip",
        top_folder="ESC-50-master",
        folder="ESC-50",
        csv="meta/esc50.csv",
        rows=2000,
        audio_path=_esc50_audio,
        approx_size=600_000_000,  # GitHub publishes no size for a branch archive; its weight when checked
    ),
    "us8k": DatasetSpec(
        name="us8k",
        url="https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz",
        archive="UrbanSound8K.tar.gz",
        top_folder="UrbanSound8K",
        folder="UrbanSound8K",
        csv="metadata/UrbanSound8K.csv",
        rows=8732,
        audio_path=_us8k_audio,
        md5="9aa69802bbf37fb986f71ec1483a196e",
        size=6_023_741_708,
    ),
}


# ----------------------------------------------------------------------------------------- hashing
def file_digest(path, algorithm: str = "sha256", progress: bool = False) -> str:
    """Hex digest of a file, read in chunks so multi-GB archives need no memory."""
    path = Path(path)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f, progress_bar(path.stat().st_size, f"{algorithm} {path.name}", enabled=progress,
                                             unit="B", unit_scale=True) as bar:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify_checksum(path, algorithm: str, expected: str, progress: bool = False) -> None:
    """Raise ChecksumError naming the file and both hashes when they differ."""
    actual = file_digest(path, algorithm, progress=progress)
    if actual.lower() != expected.lower():
        raise ChecksumError(
            f"{path}: {algorithm} mismatch: expected {expected.lower()}, got {actual}; the file is "
            f"corrupt or incomplete - delete it and rerun")


# ---------------------------------------------------------------------------------------- download
def _offline_error(url: str, dest: Path, reason) -> DownloadError:
    return DownloadError(f"cannot reach {url}: {reason}; download it by hand to {dest} and rerun")


def _content_range_start(value: Optional[str]) -> Optional[int]:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def download(url: str, dest, *, size: Optional[int] = None, opener=None, progress: bool = True,
             chunk_bytes: int = CHUNK_BYTES, timeout: float = TIMEOUT_SECONDS) -> Path:
    """Download ``url`` to ``dest`` unless it is already there; resume ``dest.part`` by HTTP Range.

    The file only gets its final name once complete, so an existing ``dest`` is a finished download
    (its checksum is the caller's business). ``opener(request, timeout=...)`` defaults to
    ``urllib.request.urlopen``; tests pass a fake.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:  # cannot be a prefix of the real file
        part.unlink()
        offset = 0
    opener = opener or urllib.request.urlopen
    request = urllib.request.Request(url, headers={"User-Agent": "csr-download/1.0"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = opener(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the .part already holds everything
            os.replace(part, dest)
            return dest
        raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}; download it by "
                            f"hand to {dest} and rerun") from err
    except urllib.error.URLError as err:
        raise _offline_error(url, dest, err.reason) from err
    except (OSError, http.client.HTTPException) as err:  # socket.timeout, ConnectionError, ...
        raise _offline_error(url, dest, err) from err

    with response:
        status = getattr(response, "status", None) or response.getcode()
        length = response.headers.get("Content-Length")
        if offset and status == 206 and _content_range_start(
                response.headers.get("Content-Range")) == offset:
            mode = "ab"
        else:  # server ignored the Range header (or this is a fresh start): write from byte 0
            mode, offset = "wb", 0
        total = offset + int(length) if length is not None else size
        try:
            with open(part, mode) as out, progress_bar(total, dest.name, enabled=progress, initial=offset,
                                                       unit="B", unit_scale=True) as bar:
                for chunk in iter(lambda: response.read(chunk_bytes), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (socket.timeout, ConnectionError, http.client.HTTPException) as err:
            raise DownloadError(f"download of {url} interrupted: {err}; the partial file "
                                f"{part} is kept - rerun to resume") from err
    got = part.stat().st_size
    if total is not None and got != total:
        raise DownloadError(f"download of {url} stopped at {got} of {total} bytes; the partial "
                            f"file {part} is kept - rerun to resume")
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------- extraction
def _check_member_name(archive: Path, name: str) -> None:
    unix = name.replace("\\", "/")
    if unix.startswith("/") or re.match(r"^[A-Za-z]:", unix):
        raise UnsafeArchiveError(f"{archive}: unsafe member {name!r}: absolute path")
    if ".." in unix.split("/"):
        raise UnsafeArchiveError(f"{archive}: unsafe member {name!r}: '..' path component")


def _target(base: Path, name: str) -> Path:
    path = (base / name).resolve()
    if path != base and base not in path.parents:  # defence in depth after the name check
        raise UnsafeArchiveError(f"unsafe member {name!r}: resolves outside {base}")
    return path


def _copy(src, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK_BYTES)


def _extract_zip(archive: Path, base: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_member_name(archive, info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if info.is_dir():
                if kind not in (0, stat.S_IFDIR):
                    raise UnsafeArchiveError(f"{archive}: unsafe member {info.filename!r}: "
                                             f"not a regular folder")
                _target(base, info.filename).mkdir(parents=True, exist_ok=True)
                continue
            if kind == stat.S_IFLNK:
                raise UnsafeArchiveError(f"{archive}: unsafe member {info.filename!r}: symlink")
            if kind not in (0, stat.S_IFREG):
                raise UnsafeArchiveError(f"{archive}: unsafe member {info.filename!r}: "
                                         f"not a regular file")
            with zf.open(info) as src:
                _copy(src, _target(base, info.filename))


def _extract_tar(archive: Path, base: Path) -> None:
    # Streamed member by member: one pass over a 6 GB .tar.gz, no random access needed.
    with tarfile.open(archive, "r|*") as tf:
        for member in tf:
            _check_member_name(archive, member.name)
            if member.issym():
                raise UnsafeArchiveError(f"{archive}: unsafe member {member.name!r}: symlink")
            if member.islnk():
                raise UnsafeArchiveError(f"{archive}: unsafe member {member.name!r}: hardlink")
            if member.isdir():
                _target(base, member.name).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                _copy(tf.extractfile(member), _target(base, member.name))
            else:
                raise UnsafeArchiveError(f"{archive}: unsafe member {member.name!r}: device, "
                                         f"fifo or other special file")


def safe_extract(archive, dest) -> Path:
    """Extract a .zip or .tar(.gz) into ``dest``, refusing anything but plain files and folders.

    Raises UnsafeArchiveError naming the offending member; ``dest`` may then hold part of the
    archive, so callers extract into a staging folder they can throw away.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, base)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, base)
        else:
            raise DownloadError(f"{archive}: not a zip or tar archive - delete it and rerun")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DownloadError(f"{archive}: damaged archive ({err}) - delete it and rerun") from err
    return dest


# ------------------------------------------------------------------------------------- the dataset
def check_content(spec: DatasetSpec, folder) -> Optional[str]:
    """None if ``folder`` holds the full dataset (spec.rows table rows, every audio file present),
    else a description of the first problem found."""
    folder = Path(folder)
    table = folder / spec.csv
    if not table.is_file():
        return f"{table} is missing"
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != spec.rows:
        return f"{table} has {len(rows)} rows, expected {spec.rows}"
    missing = [p for p in (folder / spec.audio_path(r) for r in rows) if not p.is_file()]
    if missing:
        return f"{len(missing)} audio files listed in {table} are missing, e.g. {missing[0]}"
    return None


def _sha256_record(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def _verify_archive(spec: DatasetSpec, archive: Path, progress: bool) -> str:
    """Check the archive against the published size/md5, or against the sha256 recorded on first
    use when nothing is published. Returns its sha256 when that is what identifies it."""
    if spec.size is not None and archive.stat().st_size != spec.size:
        raise ChecksumError(f"{archive}: size {archive.stat().st_size} bytes, expected "
                            f"{spec.size}; the file is corrupt or incomplete - delete it and rerun")
    if spec.md5:
        verify_checksum(archive, "md5", spec.md5, progress=progress)
        return ""
    sha256 = file_digest(archive, "sha256", progress=progress)
    record = _sha256_record(archive)
    if record.is_file():
        expected = record.read_text().split()[0]
        if sha256 != expected.lower():
            raise ChecksumError(f"{archive}: sha256 mismatch: expected {expected} (recorded in "
                                f"{record}), got {sha256}; delete the archive (and the record, if "
                                f"the upstream archive legitimately changed) and rerun")
    return sha256


def _write_marker(folder: Path, spec: DatasetSpec, archive: Optional[Path], sha256: str) -> None:
    info = {"dataset": spec.name, "url": spec.url,
            "archive": archive.name if archive else None, "md5": spec.md5, "sha256": sha256 or None}
    (folder / MARKER).write_text(json.dumps(info, indent=1) + "\n")


def _unpack(spec: DatasetSpec, archive: Path, root: Path, sha256: str) -> Path:
    """Extract into root/.<folder>.partial, check the content, mark it, then rename into place."""
    target = root / spec.folder
    staging = root / f".{spec.folder}.partial"
    if staging.exists():  # left over from a killed run
        shutil.rmtree(staging)
    try:
        safe_extract(archive, staging)
        top = staging / spec.top_folder
        if not top.is_dir():
            found = sorted(p.name for p in staging.iterdir())
            raise DownloadError(f"{archive}: expected a top folder {spec.top_folder}/, found "
                                f"{found}")
        problem = check_content(spec, top)
        if problem:
            raise DownloadError(f"{archive}: unpacked content is incomplete: {problem}")
        _write_marker(top, spec, archive, sha256)
        os.replace(top, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def local_state(spec: DatasetSpec, target) -> tuple[str, Optional[str]]:
    """What is at a data set's folder, as ensure_dataset decides: ("marked", None) unpacked and verified
    here; ("unmarked", None) complete, put there by hand; ("incomplete", problem) present but not the
    whole data set; ("absent", None) nothing yet (the archive will be fetched)."""
    target = Path(target)
    if (target / MARKER).is_file():
        return "marked", None
    if not target.exists():
        return "absent", None
    problem = check_content(spec, target)
    return ("incomplete", problem) if problem else ("unmarked", None)


def ensure_dataset(name: str, root, *, opener=None, progress: bool = True) -> Path:
    """Root of dataset ``name`` ("esc50" or "us8k") under ``root``, fetched and unpacked if needed.

    Nothing is done when root/<folder> carries the completion marker. A folder without the marker
    (e.g. unpacked by hand) is accepted after a content check. Otherwise the archive is downloaded
    (or resumed, or taken as found in root), verified, and unpacked.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    spec = DATASETS[name]
    root = Path(root).expanduser().resolve()
    target = root / spec.folder
    state, problem = local_state(spec, target)
    if state == "incomplete":
        raise DownloadError(f"{target} exists but is not a complete {spec.name} dataset "
                            f"({problem}); remove it and rerun")
    if state == "unmarked":
        _write_marker(target, spec, None, "")
    if state != "absent":
        return target
    root.mkdir(parents=True, exist_ok=True)
    archive = download(spec.url, root / spec.archive, size=spec.size, opener=opener,
                       progress=progress)
    sha256 = _verify_archive(spec, archive, progress)
    target = _unpack(spec, archive, root, sha256)
    if sha256 and not _sha256_record(archive).is_file():
        _sha256_record(archive).write_text(f"{sha256}  {archive.name}\n")
    return target
