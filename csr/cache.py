"""Decode a dataset once into an on-disk float16 memmap so training never re-decodes audio.

Decoding and resampling 8,732 UrbanSound8K clips takes far longer than an epoch, and the data
(ESC-50 441 MB, UrbanSound8K 1.9 GB as float16) need not fit in RAM: rows are read from a memmap.

Layout in `cache_dir`, per cache key (a hash of the ordered sources and the settings):
  waveforms-<key>.npy   float16 (N, int(sr * seconds)), rows in DataFrame order
  waveforms-<key>.json  manifest: format version, settings, the sources (path, size, mtime_ns),
                        which rows are done, and a blake2b checksum of the finished .npy
A changed source file changes the key, so the cache is rebuilt; rows whose source is unchanged are
copied from any older cache in the directory instead of decoded again (this is also how a build
that stopped on a broken file resumes after the file is fixed or its row removed). An interrupted
build resumes from its manifest. A truncated or corrupted cache is rebuilt with a warning.
Float16 keeps ~3 significant digits at any level, which suits RMS-normalised audio (peaks > 1).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from csr import config
from csr.audio import AudioError, load_audio

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DTYPE = np.dtype(np.float16)
SAVE_EVERY_ROWS = 256  # progress is made durable at least this often ...
SAVE_EVERY_SECONDS = 30.0  # ... and at least this often
_CHUNK = 1 << 24  # checksum read size (16 MiB)

try:
    import fcntl
except ImportError:  # Windows: no advisory lock; one builder per cache directory at a time
    fcntl = None


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
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


@contextlib.contextmanager
def _locked(cache_dir: Path):
    """Serialise builders sharing a cache directory (POSIX advisory lock)."""
    if fcntl is None:
        yield
        return
    with open(cache_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _decode_row(args):
    path, sr, seconds = args
    values = load_audio(path, sr=sr, seconds=seconds).astype(DTYPE)
    if not np.all(np.isfinite(values)):  # |x| > 65504 after RMS normalisation: never store inf
        raise AudioError(f"{path}: samples exceed the float16 range of the cache")
    return values


class _Build:
    """One cache file being filled; progress (done rows) is made durable by `save`."""

    def __init__(self, npy: Path, manifest_path: Path, manifest: dict, mode: str):
        self.npy, self.manifest_path, self.manifest = npy, manifest_path, manifest
        if mode == "w+":
            shape = (len(manifest["sources"]), manifest["settings"]["samples"])
            self.array = np.lib.format.open_memmap(npy, mode="w+", dtype=DTYPE, shape=shape)
        else:
            self.array = np.lib.format.open_memmap(npy, mode="r+")
        self.done = np.array([c == "1" for c in manifest["done"]], dtype=bool)
        self.last_save, self.unsaved = time.monotonic(), 0

    def put(self, row: int, values: np.ndarray) -> None:
        self.array[row] = values
        self.done[row] = True
        self.unsaved += 1
        if self.unsaved >= SAVE_EVERY_ROWS or time.monotonic() - self.last_save > SAVE_EVERY_SECONDS:
            self.save()

    def save(self, complete: bool = False) -> None:
        self.array.flush()  # rows reach the file before the manifest claims them
        self.manifest["done"] = "".join("1" if d else "0" for d in self.done)
        if complete:
            del self.array
            self.manifest["complete"] = True
            self.manifest["checksum"] = file_checksum(self.npy)
        _write_json(self.manifest_path, self.manifest)
        self.last_save, self.unsaved = time.monotonic(), 0


def _existing_build(npy, manifest_path, expected, verify) -> tuple[str, dict | None]:
    """Classify what is on disk for this key: 'ready', 'partial' (resumable) or 'none'."""
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
    if not manifest.get("complete"):
        return "partial", manifest
    if verify and file_checksum(npy) != manifest.get("checksum"):
        logger.warning("%s: checksum mismatch (corrupted cache); rebuilding", npy)
        return "none", None
    return "ready", manifest


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
    """Copy rows whose exact source (path, size, mtime) another cache already decoded.
    With verify, a finished donor is checksummed first and deleted if corrupted."""
    wanted = {tuple(s): i for i, s in enumerate(build.manifest["sources"]) if not build.done[i]}
    donors = []
    for npy, manifest_path, manifest in _donors(cache_dir, settings, build.manifest_path):
        rows = {tuple(s): j for j, (s, d) in enumerate(zip(manifest["sources"], manifest["done"]))
                if d == "1" and tuple(s) in wanted}  # identity -> donor row
        if rows and verify and manifest.get("complete") and file_checksum(npy) != manifest.get("checksum"):
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
        superseded = not manifest.get("complete") and all(s in identities for s in done)
        if stale or superseded:
            logger.info("removing obsolete cache %s", npy)
            _remove(npy, manifest_path)


def _decode_missing(build: _Build, paths, sr, seconds, progress: bool, workers: int) -> None:
    """Decode every row not yet done, in order; progress is saved even when a file fails."""
    from tqdm.auto import tqdm

    todo = [i for i in range(len(paths)) if not build.done[i]]
    bar = tqdm(total=len(paths), initial=len(paths) - len(todo), unit="clip",
               desc=f"decoding into {build.npy.name}", disable=not progress)
    try:
        if workers <= 1:
            for i in todo:
                build.put(i, _decode_row((paths[i], sr, seconds)))
                bar.update()
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the caller may already hold TensorFlow's threads.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                try:
                    results = pool.map(_decode_row, [(paths[i], sr, seconds) for i in todo], chunksize=4)
                    for i, values in zip(todo, results):
                        build.put(i, values)
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
        build.save()


def load_waveforms(df, cache_dir, sr=config.SAMPLE_RATE, seconds=config.CLIP_SECONDS,
                   verify: bool = True, progress: bool = True, workers: int = 1) -> np.memmap:
    """Waveforms of df["path"] as a read-only float16 memmap (N, int(sr * seconds)), rows in df order.

    Built on first use (decoding with csr.audio.load_audio, `workers` processes), then reused while
    every source file keeps its size and mtime. verify=True checks the content checksum on every
    load (reads the whole file once). A file that fails to decode raises AudioError; the rows
    decoded so far are kept for the next call.
    """
    if "path" not in getattr(df, "columns", ()):
        raise ValueError("load_waveforms needs a DataFrame with a 'path' column")
    if len(df) == 0:
        raise ValueError("load_waveforms: the DataFrame has no rows")
    if not (float(sr) > 0 and float(seconds) > 0 and int(sr * seconds) > 0):
        raise ValueError(f"invalid sr={sr!r} / seconds={seconds!r}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in df["path"]]
    settings = _settings(sr, seconds)
    with _locked(cache_dir):
        sources = source_list(paths)
        key = cache_key(sources, sr, seconds)
        npy, manifest_path = cache_dir / f"waveforms-{key}.npy", cache_dir / f"waveforms-{key}.json"
        expected = {"settings": settings, "sources": sources}
        state, manifest = _existing_build(npy, manifest_path, expected, verify)
        if state != "ready":
            if state == "partial":
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
            _decode_missing(build, paths, sr, seconds, progress, workers)
            build.save(complete=True)
            _cleanup(donors, sources)
        return np.load(npy, mmap_mode="r")
