"""Decode a dataset once into an on-disk float16 memmap so training never re-decodes audio.

Decoding and resampling 8,732 UrbanSound8K clips takes far longer than an epoch, and the data
(ESC-50 441 MB, UrbanSound8K 1.9 GB as float16) need not fit in RAM: rows are read from a memmap.

Layout in `cache_dir`, per cache key (a hash of the ordered sources and the settings):
  waveforms-<key>.npy   float16 (N, int(sr * seconds)), rows in DataFrame order
  waveforms-<key>.json  manifest: format version, settings, the sources (path, size, mtime_ns),
                        which rows are done, the files that failed to decode (with the reason),
                        and a blake2b checksum of the finished .npy
A changed source file changes the key, so the cache is rebuilt; rows whose source is unchanged are
copied from any older cache in the directory instead of decoded again (this is also how a build
that stopped on a broken file resumes after the file is fixed or its row removed). An interrupted
build resumes from its manifest. A truncated or corrupted cache is rebuilt with a warning.
Float16 keeps ~3 significant digits at any level, which suits RMS-normalised audio (peaks > 1).

`load_waveforms` needs every file (a labeled clip that cannot be read stops the run, naming it);
`load_waveforms_skipping`, for a user's unlabeled recordings, leaves unreadable files out with one
warning. A failure is remembered per file identity, so a rerun does not decode an unchanged bad
file again; a changed file (size, mtime or ctime, e.g. after chmod) or decoder is retried.
A finished cache in a folder the user cannot write (a shared, read-only copy) is read without
locking; building one there is a CacheError. Files are created with the user's umask.
Paths that are not valid UTF-8 are stored in the JSON manifest as \\udcXX escapes, which round-trip.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from csr import config
from csr.audio import DECODER_REVISION, AudioError, load_audio
from csr.errors import UserError
from csr.runio import atomic_write

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DTYPE = np.dtype(np.float16)
SAVE_EVERY_ROWS = 256  # progress is made durable at least this often ...
SAVE_EVERY_SECONDS = 30.0  # ... and at least this often
_CHUNK = 1 << 24  # checksum read size (16 MiB)
MAX_LISTED = 20  # skipped files named in the warning; the count is always given in full

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; one builder per cache directory at a time
    fcntl = None


class CacheError(UserError, OSError):
    """A cache folder that cannot be used; the message names it and says what to do."""


class Rows:
    """Some rows of a cached (N, samples) array, read through without copying: len, shape, dtype
    and indexing by int, slice or index array behave as on an array holding only those rows."""

    def __init__(self, waves, rows):
        self.waves = waves
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), int(waves.shape[1]))
        self.dtype = waves.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx):
        return self.waves[self.rows[idx]]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.waves[self.rows], dtype=dtype)


def source_list(paths) -> list[list]:
    """[path, size, mtime_ns] of each file, in order: the identity a cache row was decoded from."""
    sources = []
    for path in paths:
        path = str(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise AudioError(f"{path}: file not found") from None
        except OSError as err:
            raise AudioError(f"{path}: cannot stat ({err})") from err
        sources.append([path, int(st.st_size), int(st.st_mtime_ns)])
    return sources


def _settings(sr, seconds) -> dict:
    return {"format_version": FORMAT_VERSION, "sr": float(sr), "seconds": float(seconds),
            "samples": int(sr * seconds), "dtype": DTYPE.name,
            "decoder": "csr.audio.load_audio"}


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def cache_key(sources, sr=config.SAMPLE_RATE, seconds=config.CLIP_SECONDS) -> str:
    """File-name key: changes when any source (path, size, mtime) or setting changes."""
    return _digest({"sources": _digest(sources), "settings": _digest(_settings(sr, seconds))})[:24]


def file_checksum(path) -> str:
    """blake2b of the whole file, read in chunks (the cache may be larger than RAM)."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    """Atomic replace, so a kill mid-write leaves the previous manifest intact."""
    with atomic_write(path) as f:
        json.dump(obj, f)


def _read_json(path: Path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _npy_problem(path: Path, shape) -> str | None:
    """Why the .npy cannot hold `shape` float16 rows (missing, bad header, truncated), or None."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(f)
            else:
                return f"unsupported .npy version {version}"
            offset = f.tell()
    except (OSError, ValueError, EOFError) as err:
        return f"unreadable header ({err})"
    if header != (tuple(shape), False, DTYPE):
        return f"header {header} does not match expected {(tuple(shape), False, DTYPE)}"
    expected = offset + int(np.prod(shape)) * DTYPE.itemsize
    actual = path.stat().st_size
    if actual != expected:
        return f"file is {actual} bytes, expected {expected} (truncated or overwritten)"
    return None


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _printable(path: str) -> str:
    """The path with non-UTF-8 bytes shown as \\udcXX, so any terminal or log file can show it."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


@contextlib.contextmanager
def _locked(cache_dir: Path):
    """Serialise builders sharing a cache directory (POSIX advisory lock). Yields whether the
    folder is writable: a read-only one is read without a lock, as nobody can change it."""
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        yield False
        return
    if fcntl is None:
        yield True
        return
    try:
        handle = open(cache_dir / ".lock", "a")
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        yield False  # e.g. a read-only mount that access() did not report
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _failure(source, reason: str) -> dict:
    """What the manifest remembers of a file that failed to decode."""
    try:
        ctime = os.stat(source[0]).st_ctime_ns
    except OSError:
        ctime = None
    return {"source": list(source), "ctime_ns": ctime, "decoder": DECODER_REVISION, "reason": reason}


def _still_failing(record: dict) -> bool:
    """A remembered failure stands while the decoder and the file are unchanged; ctime also moves
    on chmod or chown, so a file made readable is retried."""
    if record.get("decoder") != DECODER_REVISION:
        return False
    try:
        return os.stat(record["source"][0]).st_ctime_ns == record.get("ctime_ns")
    except OSError:
        return False


def _finished(manifest: dict) -> bool:
    """Every row decoded or remembered as failed (manifests without failures only say 'complete')."""
    return bool(manifest.get("finished", manifest.get("complete")))


def _decode_row(args):
    path, sr, seconds = args
    values = load_audio(path, sr=sr, seconds=seconds).astype(DTYPE)
    if not np.all(np.isfinite(values)):  # |x| > 65504 after RMS normalisation: never store inf
        raise AudioError(f"{path}: samples exceed the float16 range of the cache")
    return values


def _try_decode_row(args):
    """(values, None) or (None, message): a failure comes back as data, so one bad file does not
    cost a worker pool the rest of its batch."""
    try:
        return _decode_row(args), None
    except AudioError as err:
        return None, str(err)


class _Build:
    """One cache file being filled; progress (done and failed rows) is made durable by `save`."""

    def __init__(self, npy: Path, manifest_path: Path, manifest: dict, mode: str):
        self.npy, self.manifest_path, self.manifest = npy, manifest_path, manifest
        if mode == "w+":  # open(..., "w+b") inside: the file gets the user's umask
            shape = (len(manifest["sources"]), manifest["settings"]["samples"])
            self.array = np.lib.format.open_memmap(npy, mode="w+", dtype=DTYPE, shape=shape)
        else:
            self.array = np.lib.format.open_memmap(npy, mode="r+")
        self.done = np.array([c == "1" for c in manifest["done"]], dtype=bool)
        self.failed = {r["row"]: r for r in manifest.get("failed", []) if _still_failing(r)}
        self.last_save, self.unsaved = time.monotonic(), 0

    def put(self, row: int, values: np.ndarray) -> None:
        self.array[row] = values
        self.done[row] = True
        self.failed.pop(row, None)
        self._progress()

    def fail(self, row: int, message: str) -> None:
        path = self.manifest["sources"][row][0]
        reason = message[len(path) + 2:] if message.startswith(f"{path}: ") else message
        self.failed[row] = {"row": row, **_failure(self.manifest["sources"][row], reason)}
        self._progress()

    def _progress(self) -> None:
        self.unsaved += 1
        if self.unsaved >= SAVE_EVERY_ROWS or time.monotonic() - self.last_save > SAVE_EVERY_SECONDS:
            self.save()

    def save(self, final: bool = False) -> None:
        """Record progress; `final` when no row is left to try: the .npy gets its checksum, and
        'complete' (every row decoded) or only 'finished' (some remembered as failed)."""
        self.array.flush()  # rows reach the file before the manifest claims them
        self.manifest["done"] = "".join("1" if d else "0" for d in self.done)
        self.manifest["failed"] = [self.failed[row] for row in sorted(self.failed)]
        self.manifest["complete"] = self.manifest["finished"] = False
        self.manifest["checksum"] = None
        if final:
            del self.array
            self.manifest["complete"] = bool(self.done.all())
            self.manifest["finished"] = all(d or i in self.failed for i, d in enumerate(self.done))
            self.manifest["checksum"] = file_checksum(self.npy)
        _write_json(self.manifest_path, self.manifest)
        self.last_save, self.unsaved = time.monotonic(), 0


def _existing_build(npy, manifest_path, expected, verify) -> tuple[str, dict | None]:
    """Classify what is on disk for this key: 'ready' (every row), 'finished' (every row decoded
    or remembered as failed), 'partial' (resumable) or 'none'."""
    manifest = _read_json(manifest_path)
    if manifest is None:
        if npy.exists() or manifest_path.exists():
            logger.warning("%s: cache manifest missing or unreadable; rebuilding", manifest_path)
        return "none", None
    shape = (len(expected["sources"]), expected["settings"]["samples"])
    if (manifest.get("settings") != expected["settings"] or manifest.get("sources") != expected["sources"]
            or len(manifest.get("done", "")) != shape[0]):
        logger.warning("%s: manifest does not describe this data; rebuilding", manifest_path)
        return "none", None
    problem = _npy_problem(npy, shape)
    if problem:
        logger.warning("%s: cache unusable, %s; rebuilding", npy, problem)
        return "none", None
    if not _finished(manifest):
        return "partial", manifest
    if verify and file_checksum(npy) != manifest.get("checksum"):
        logger.warning("%s: checksum mismatch (corrupted cache); rebuilding", npy)
        return "none", None
    return ("ready" if manifest.get("complete") else "finished"), manifest


def _donors(cache_dir: Path, settings: dict, skip: Path):
    """Other caches in the directory with the same settings: (npy, manifest_path, manifest)."""
    for name in sorted(glob.glob(str(cache_dir / "waveforms-*.json"))):
        manifest_path = Path(name)
        if manifest_path == skip:
            continue
        manifest = _read_json(manifest_path)
        if not manifest or manifest.get("settings") != settings:
            continue
        npy = manifest_path.with_suffix(".npy")
        shape = (len(manifest.get("sources", [])), settings["samples"])
        if _npy_problem(npy, shape) is None and len(manifest.get("done", "")) == shape[0]:
            yield npy, manifest_path, manifest


def _salvage(build: _Build, cache_dir: Path, settings: dict, verify: bool) -> list:
    """Copy rows whose exact source (path, size, mtime) another cache already decoded, and the
    failures it remembers. With verify, a finished donor is checksummed first and deleted if
    corrupted."""
    wanted = {tuple(s): i for i, s in enumerate(build.manifest["sources"]) if not build.done[i]}
    donors = []
    for npy, manifest_path, manifest in _donors(cache_dir, settings, build.manifest_path):
        rows = {tuple(s): j for j, (s, d) in enumerate(zip(manifest["sources"], manifest["done"]))
                if d == "1" and tuple(s) in wanted}  # identity -> donor row
        for record in manifest.get("failed", []):
            row = wanted.get(tuple(record["source"]))
            if row is not None and row not in build.failed and _still_failing(record):
                build.failed[row] = {**record, "row": row}
        if rows and verify and _finished(manifest) and file_checksum(npy) != manifest.get("checksum"):
            logger.warning("%s: checksum mismatch (corrupted cache); removing it", npy)
            _remove(manifest_path, npy)
            continue
        donors.append((npy, manifest_path, manifest))
        if rows:
            source = np.load(npy, mmap_mode="r")
            for identity, j in rows.items():
                build.put(wanted.pop(identity), source[j])
            del source
            logger.info("%s: reused %d decoded rows from %s", build.npy, len(rows), npy)
    return donors


def _cleanup(donors, sources) -> None:
    """Delete caches made obsolete by the one just finished: those recording an older version of
    one of its files, and interrupted builds whose decoded rows it now holds."""
    current = {s[0]: tuple(s) for s in sources}
    identities = set(current.values())
    for npy, manifest_path, manifest in donors:
        recorded = [tuple(s) for s in manifest["sources"]]
        stale = any(s[0] in current and current[s[0]] != s for s in recorded)
        done = [s for s, d in zip(recorded, manifest["done"]) if d == "1"]
        superseded = not _finished(manifest) and all(s in identities for s in done)
        if stale or superseded:
            logger.info("removing obsolete cache %s", npy)
            _remove(npy, manifest_path)


def _decode_missing(build: _Build, paths, sr, seconds, progress: bool, workers: int, skip: bool) -> None:
    """Decode every row not yet done, in order; progress is saved even when a file fails. A failure
    is remembered, then raised, or with `skip` passed over (as is a failure remembered before)."""
    from csr.progress import bar as progress_bar

    todo = [i for i in range(len(paths)) if not build.done[i] and not (skip and i in build.failed)]
    bar = progress_bar(len(paths), f"decoding into {build.npy.name}", enabled=progress,
                       initial=len(paths) - len(todo), unit="clip")

    def store(i, values, message):
        if message is None:
            build.put(i, values)
        else:
            build.fail(i, message)
            if not skip:
                raise AudioError(message)
        bar.update()

    try:
        if workers <= 1:
            for i in todo:
                store(i, *_try_decode_row((paths[i], sr, seconds)))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the caller may already hold TensorFlow's threads.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                try:
                    results = pool.map(_try_decode_row, [(paths[i], sr, seconds) for i in todo], chunksize=4)
                    for i, (values, message) in zip(todo, results):
                        store(i, values, message)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
        build.save()


def _unusable(cache_dir: Path, state: str) -> CacheError:
    what = "missing or unusable" if state == "none" else "unfinished"
    return CacheError(f"{cache_dir}: the waveform cache for this data is {what} and the folder is not "
                      "writable, so it cannot be built there; pass a writable --cache_dir")


def _load(df, cache_dir, sr, seconds, verify: bool, progress: bool, workers: int, skip: bool):
    """The cache's memmap (N rows in df order) and its failure records, built or resumed as needed."""
    if "path" not in getattr(df, "columns", ()):
        raise ValueError("load_waveforms needs a DataFrame with a 'path' column")
    if len(df) == 0:
        raise ValueError("load_waveforms: the DataFrame has no rows")
    if not (float(sr) > 0 and float(seconds) > 0 and int(sr * seconds) > 0):
        raise ValueError(f"invalid sr={sr!r} / seconds={seconds!r}")
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"{cache_dir}: cannot create the cache folder ({err.strerror}); "
                         "pass a writable --cache_dir") from err
    paths = [str(p) for p in df["path"]]
    settings = _settings(sr, seconds)
    with _locked(cache_dir) as writable:
        sources = source_list(paths)
        key = cache_key(sources, sr, seconds)
        npy, manifest_path = cache_dir / f"waveforms-{key}.npy", cache_dir / f"waveforms-{key}.json"
        expected = {"settings": settings, "sources": sources}
        state, manifest = _existing_build(npy, manifest_path, expected, verify)
        # a changed bad file is retried, unless the folder is read-only: then it stays skipped
        usable = state == "ready" or (skip and state == "finished" and (
            not writable or all(_still_failing(r) for r in manifest.get("failed", []))))
        if not usable:
            if not writable:
                raise _unusable(cache_dir, state)
            if state != "none":
                build = _Build(npy, manifest_path, manifest, mode="r+")
                logger.info("%s: resuming, %d of %d rows done", npy, int(build.done.sum()), len(paths))
            else:
                _remove(manifest_path, npy)
                manifest = {**expected, "key": key, "sources_hash": _digest(sources),
                            "settings_hash": _digest(settings), "done": "0" * len(paths),
                            "complete": False, "checksum": None}
                build = _Build(npy, manifest_path, manifest, mode="w+")
                build.save()
            donors = _salvage(build, cache_dir, settings, verify)
            _decode_missing(build, paths, sr, seconds, progress, workers, skip)
            build.save(final=True)
            _cleanup(donors, sources)
            manifest = build.manifest
        return np.load(npy, mmap_mode="r"), manifest.get("failed", [])


def load_waveforms(df, cache_dir, sr=config.SAMPLE_RATE, seconds=config.CLIP_SECONDS,
                   verify: bool = True, progress: bool = True, workers: int = 1) -> np.memmap:
    """Waveforms of df["path"] as a read-only float16 memmap (N, int(sr * seconds)), rows in df order.

    Built on first use (decoding with csr.audio.load_audio, `workers` processes), then reused while
    every source file keeps its size and mtime. verify=True checks the content checksum on every
    load (reads the whole file once). A file that fails to decode raises AudioError; the rows
    decoded so far are kept for the next call. A finished cache in a read-only folder is read
    as it is; one that needs building there raises CacheError.
    """
    waves, _ = _load(df, cache_dir, sr, seconds, verify, progress, workers, skip=False)
    return waves


def load_waveforms_skipping(df, cache_dir, sr=config.SAMPLE_RATE, seconds=config.CLIP_SECONDS,
                            verify: bool = True, progress: bool = True, workers: int = 1):
    """Like load_waveforms, but files that cannot be decoded are left out: returns (waves, skipped).

    For a user's unlabeled recordings, where one unreadable file should not stop a run. `waves`
    holds the readable rows in df order (the memmap itself when none was skipped, else a `Rows`
    view: len, .shape, .dtype and waves[index_array] as on an array); `skipped` lists
    (path, reason) of the others, which one warning names. Failures are remembered in the cache
    manifest, so a rerun neither decodes the good files nor retries an unchanged bad one.
    Raises AudioError when no file at all can be decoded.
    """
    waves, failed = _load(df, cache_dir, sr, seconds, verify, progress, workers, skip=True)
    skipped = [(r["source"][0], r["reason"]) for r in failed]
    if not skipped:
        return waves, []
    listing = [f"{_printable(path)}: {reason}" for path, reason in skipped]
    shown = "\n  ".join(listing[:MAX_LISTED])
    more = f"\n  ... and {len(listing) - MAX_LISTED} more" if len(listing) > MAX_LISTED else ""
    if len(skipped) == len(df):
        raise AudioError(f"none of the {len(df)} files could be decoded:\n  {shown}{more}")
    logger.warning("skipping %d of %d audio files that cannot be decoded (fix or remove them to use "
                   "them):\n  %s%s", len(skipped), len(df), shown, more)
    failed_rows = {r["row"] for r in failed}
    return Rows(waves, [i for i in range(len(df)) if i not in failed_rows]), skipped
