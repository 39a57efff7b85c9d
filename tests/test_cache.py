"""csr.cache: build once, reuse, rebuild on changed/truncated/corrupted data, resume after failures."""

import builtins
import errno
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from csr import cache
from csr.audio import AudioError, load_audio
from csr.cache import CacheError, cache_key, file_checksum, load_waveforms, load_waveforms_skipping

SR, SECONDS = 8000, 0.25  # tiny clips keep the tests fast; the cache does not care about sizes
N_SAMPLES = int(SR * SECONDS)


def write_clip(path, freq, seconds=0.2, sr=SR):
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype="PCM_16")


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    paths = []
    for i in range(6):
        path = folder / f"clip{i}.wav"
        # different rates and lengths: some rows are resampled, padded or cropped
        write_clip(path, 200 + 100 * i, seconds=0.15 + 0.05 * i, sr=(SR, 16000)[i % 2])
        paths.append(str(path))
    return pd.DataFrame({"path": paths, "fold": 1, "label": 0, "category": ""})


@pytest.fixture
def decoded(monkeypatch):
    """Record which files the cache decodes (the cache's decoder is csr.audio.load_audio)."""
    calls = []

    def counting(path, sr, seconds):
        calls.append(str(path))
        return load_audio(path, sr=sr, seconds=seconds)

    monkeypatch.setattr(cache, "load_audio", counting)
    return calls


def expected(df):
    return np.stack([load_audio(p, sr=SR, seconds=SECONDS) for p in df["path"]])


def load(df, cache_dir, **kwargs):
    return load_waveforms(df, cache_dir, sr=SR, seconds=SECONDS, progress=False, **kwargs)


def cache_files(cache_dir, suffix=".npy"):
    return sorted(p for p in os.listdir(cache_dir) if p.endswith(suffix))


def assert_matches(waves, df):
    ref = expected(df)
    assert waves.shape == ref.shape and waves.dtype == np.float16
    # float16 keeps 11 significant bits: relative error <= 2^-11 of each value (plus subnormals)
    np.testing.assert_allclose(waves.astype(np.float32), ref, rtol=2 ** -11, atol=1e-4)


def test_build_then_reuse_without_decoding(clips, tmp_path, decoded):
    cache_dir = tmp_path / "cache"
    waves = load(clips, cache_dir)
    assert isinstance(waves, np.memmap) and not waves.flags.writeable
    assert_matches(waves, clips)
    assert decoded == list(clips["path"])
    npy = cache_dir / cache_files(cache_dir)[0]
    mtime = npy.stat().st_mtime_ns
    decoded.clear()
    again = load(clips, cache_dir)
    assert decoded == [] and npy.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again, waves)
    # rows follow df order, whatever it is (a reordered df is a different cache)
    reordered = clips.iloc[::-1]
    np.testing.assert_array_equal(load(reordered, cache_dir), waves[::-1])
    assert decoded == []  # its rows were copied from the first cache, not decoded


def test_manifest_contents(clips, tmp_path):
    cache_dir = tmp_path / "cache"
    load(clips, cache_dir)
    (manifest_name,) = cache_files(cache_dir, ".json")
    manifest = json.loads((cache_dir / manifest_name).read_text())
    settings = manifest["settings"]
    assert settings["format_version"] == cache.FORMAT_VERSION
    assert (settings["sr"], settings["seconds"], settings["samples"], settings["dtype"]) == (
        SR, SECONDS, N_SAMPLES, "float16")
    assert manifest["complete"] and manifest["done"] == "1" * len(clips)
    assert [s[0] for s in manifest["sources"]] == list(clips["path"])
    assert manifest["sources"][0][1] == os.path.getsize(clips["path"][0])
    assert manifest["checksum"] == file_checksum(cache_dir / manifest_name.replace(".json", ".npy"))
    assert manifest["key"] in manifest_name and manifest["sources_hash"] and manifest["settings_hash"]


def test_settings_change_gives_another_cache(clips, tmp_path):
    cache_dir = tmp_path / "cache"
    load(clips, cache_dir)
    other = load_waveforms(clips, cache_dir, sr=SR, seconds=0.5, progress=False)
    assert other.shape == (len(clips), int(SR * 0.5)) and len(cache_files(cache_dir)) == 2


def test_changed_source_file_rebuilds_only_that_row(clips, tmp_path, decoded):
    cache_dir = tmp_path / "cache"
    load(clips, cache_dir)
    changed = clips["path"][2]
    write_clip(changed, 1234, seconds=0.1)  # new content, new size and mtime
    decoded.clear()
    waves = load(clips, cache_dir)
    assert decoded == [changed]
    assert_matches(waves, clips)
    assert len(cache_files(cache_dir)) == 1  # the stale cache was removed


def test_truncated_cache_is_rebuilt(clips, tmp_path, decoded, caplog):
    cache_dir = tmp_path / "cache"
    load(clips, cache_dir)
    npy = cache_dir / cache_files(cache_dir)[0]
    with open(npy, "r+b") as f:
        f.truncate(npy.stat().st_size - 100)
    decoded.clear()
    with caplog.at_level(logging.WARNING, logger="csr.cache"):
        waves = load(clips, cache_dir)
    assert "truncated" in caplog.text and str(npy) in caplog.text
    assert decoded == list(clips["path"])
    assert_matches(waves, clips)


def test_corrupted_cache_is_detected(clips, tmp_path, decoded, caplog):
    cache_dir = tmp_path / "cache"
    good = np.array(load(clips, cache_dir))
    npy = cache_dir / cache_files(cache_dir)[0]
    size = npy.stat().st_size
    with open(npy, "r+b") as f:
        f.seek(size - 2 * N_SAMPLES)  # inside the last row
        f.write(b"\x7c\x00" * 8)  # float16 65504... overwrites samples, same size
    decoded.clear()
    with caplog.at_level(logging.WARNING, logger="csr.cache"):
        waves = load(clips, cache_dir)
    assert "checksum mismatch" in caplog.text
    assert decoded == list(clips["path"])
    np.testing.assert_array_equal(waves, good)


def test_corrupted_cache_is_not_copied_into_another(clips, tmp_path, decoded, caplog):
    cache_dir = tmp_path / "cache"
    good = np.array(load(clips, cache_dir))
    npy = cache_dir / cache_files(cache_dir)[0]
    with open(npy, "r+b") as f:
        f.seek(npy.stat().st_size - 2 * N_SAMPLES)
        f.write(b"\x7c\x00" * 8)
    decoded.clear()
    with caplog.at_level(logging.WARNING, logger="csr.cache"):
        waves = load(clips.iloc[::-1], cache_dir)  # another key: would copy rows from the first
    assert "checksum mismatch" in caplog.text and not npy.exists()
    assert sorted(decoded) == sorted(clips["path"])
    np.testing.assert_array_equal(waves, good[::-1])


def test_missing_or_corrupt_manifest_is_rebuilt(clips, tmp_path, decoded, caplog):
    cache_dir = tmp_path / "cache"
    load(clips, cache_dir)
    (manifest_name,) = cache_files(cache_dir, ".json")
    (cache_dir / manifest_name).write_text("{not json")
    decoded.clear()
    with caplog.at_level(logging.WARNING, logger="csr.cache"):
        assert_matches(load(clips, cache_dir), clips)
    assert "manifest" in caplog.text and decoded == list(clips["path"])


def test_interrupted_build_resumes_keeping_rows(clips, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    calls = []

    def failing(path, sr, seconds):
        if len(calls) == 3:
            raise AudioError(f"{path}: simulated failure")
        calls.append(str(path))
        return load_audio(path, sr=sr, seconds=seconds)

    monkeypatch.setattr(cache, "load_audio", failing)
    with pytest.raises(AudioError, match="clip3.wav"):
        load(clips, cache_dir)
    (manifest_name,) = cache_files(cache_dir, ".json")
    manifest = json.loads((cache_dir / manifest_name).read_text())
    assert manifest["done"] == "111000" and not manifest["complete"]
    calls.clear()
    monkeypatch.setattr(cache, "load_audio", lambda path, sr, seconds: (
        calls.append(str(path)), load_audio(path, sr=sr, seconds=seconds))[1])
    waves = load(clips, cache_dir)
    assert calls == list(clips["path"][3:])  # rows 0-2 were not decoded again
    assert_matches(waves, clips)


KILLED_BUILD = """
import os, sys
import pandas as pd
from csr import cache
from csr.audio import load_audio

cache.SAVE_EVERY_ROWS = 2
decoded = []

def dying(path, sr, seconds):
    if len(decoded) == 5:
        os._exit(3)  # like SIGKILL: no exception handler, no finally
    decoded.append(path)
    return load_audio(path, sr=sr, seconds=seconds)

cache.load_audio = dying
cache.load_waveforms(pd.DataFrame({"path": sys.argv[4:]}), sys.argv[1], sr=float(sys.argv[2]),
                     seconds=float(sys.argv[3]), progress=False)
"""


def test_killed_build_resumes_from_last_saved_progress(tmp_path, decoded):
    paths = []
    for i in range(7):
        paths.append(str(tmp_path / f"k{i}.wav"))
        write_clip(paths[-1], 300 + 50 * i)
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(cache_dir), str(SR), str(SECONDS), *paths],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    (manifest_name,) = cache_files(cache_dir, ".json")
    # progress saved every 2 rows (rows 0-3); row 4 was decoded but unrecorded at the kill
    assert json.loads((cache_dir / manifest_name).read_text())["done"] == "1111000"
    df = pd.DataFrame({"path": paths})
    waves = load(df, cache_dir)
    assert decoded == paths[4:]
    assert_matches(waves, df)


def test_broken_file_then_fixed_or_removed(clips, tmp_path, decoded):
    cache_dir = tmp_path / "cache"
    broken = clips["path"][4]
    with open(broken, "wb") as f:
        f.write(b"not audio at all" * 10)
    with pytest.raises(AudioError, match="clip4.wav"):
        load(clips, cache_dir)
    assert decoded == list(clips["path"][:5])  # rows 0-3 decoded, row 4 attempted
    # the user drops the bad row: only the rows after it are decoded
    decoded.clear()
    kept = clips.drop(index=4)
    waves = load(kept, cache_dir)
    assert decoded == [clips["path"][5]]
    assert_matches(waves, kept)
    # ... or fixes the file: only that file is decoded, the interrupted build is cleaned up
    write_clip(broken, 440)
    decoded.clear()
    waves = load(clips, cache_dir)
    assert decoded == [broken]
    assert_matches(waves, clips)
    assert len(cache_files(cache_dir)) == 2  # the full table and the table without row 4


def test_missing_source_file_is_named(clips, tmp_path):
    os.remove(clips["path"][1])
    with pytest.raises(AudioError, match="clip1.wav: file not found"):
        load(clips, tmp_path / "cache")


def test_bad_arguments(clips, tmp_path):
    with pytest.raises(ValueError, match="'path' column"):
        load(clips.drop(columns="path"), tmp_path)
    with pytest.raises(ValueError, match="no rows"):
        load(clips.iloc[:0], tmp_path)


def test_progress_is_one_final_line_when_stderr_is_not_a_terminal(clips, tmp_path, capsys):
    load_waveforms(clips.iloc[:2], tmp_path / "cache", sr=SR, seconds=SECONDS, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("decoding into waveforms-") and ": 2 clips in " in lines[0]
    assert "\r" not in lines[0]


@pytest.mark.slow
def test_worker_processes_give_the_same_cache(clips, tmp_path):
    serial = load(clips, tmp_path / "a")
    parallel = load(clips, tmp_path / "b", workers=2)
    np.testing.assert_array_equal(parallel, serial)


# ---------------------------------------------------------------- keys and file names

def test_cache_key_of_ordinary_paths_is_unchanged():
    """Existing caches stay valid: these keys were computed by the first released cache code."""
    sources = [["/data/a.wav", 1000, 1700000000000000000], ["/data/b c/\u00e9.ogg", 5, 6]]
    assert cache_key(sources, 22050, 5.0) == "fd59b97d3394bd755def3e00"
    assert cache_key(sources[:1], 8000, 0.25) == "06ef576e13a5ede6ed68da85"


def test_non_utf8_file_name(clips, tmp_path, decoded):
    folder = os.fsencode(tmp_path / "audio")
    try:
        os.rename(os.fsencode(clips["path"][3]), os.path.join(folder, b"caf\xe9.wav"))
    except OSError as err:
        pytest.skip(f"file system refuses a non-UTF-8 name: {err}")
    df = clips.copy()
    df.loc[3, "path"] = os.fsdecode(os.path.join(folder, b"caf\xe9.wav"))
    cache_dir = tmp_path / "cache"
    waves = load(df, cache_dir)
    assert_matches(waves, df)
    (manifest_name,) = cache_files(cache_dir, ".json")
    text = (cache_dir / manifest_name).read_bytes().decode("ascii")  # \udce9 is stored as an escape
    assert "caf\\udce9.wav" in text and json.loads(text)["sources"][3][0] == df["path"][3]
    decoded.clear()
    np.testing.assert_array_equal(load(df, cache_dir), waves)
    assert decoded == []


# ---------------------------------------------------------------- skipping unreadable files

@pytest.fixture
def unreadable(clips):
    """clips with rows 1 and 4 broken: junk bytes and a WAV cut short."""
    Path(clips["path"][1]).write_bytes(b"not audio at all" * 10)
    data = Path(clips["path"][4]).read_bytes()
    Path(clips["path"][4]).write_bytes(data[:len(data) // 2])
    return clips


def skipping(df, cache_dir, **kwargs):
    return load_waveforms_skipping(df, cache_dir, sr=SR, seconds=SECONDS, progress=False, **kwargs)


def test_skipping_leaves_out_unreadable_files(unreadable, tmp_path, decoded, caplog):
    cache_dir = tmp_path / "cache"
    paths = list(unreadable["path"])
    with caplog.at_level(logging.WARNING, logger="csr.cache"):
        waves, skipped = skipping(unreadable, cache_dir)
    assert [p for p, _ in skipped] == [paths[1], paths[4]]
    assert "cannot decode audio" in skipped[0][1] and skipped[1][1].startswith("truncated: header declares")
    good = unreadable.drop(index=[1, 4])
    assert len(waves) == 4 and waves.shape == (4, N_SAMPLES) and waves.dtype == np.float16
    assert_matches(np.asarray(waves), good)
    picked = waves[np.array([3, 0, 0])]  # rows gathered by index arrays, as the pipeline does
    assert picked.shape == (3, N_SAMPLES) and picked.dtype == np.float16
    np.testing.assert_array_equal(picked, np.asarray(waves)[[3, 0, 0]])
    np.testing.assert_array_equal(waves[1], np.asarray(waves)[1])
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipping 2 of 6" in record.getMessage()
    assert paths[1] in record.getMessage() and paths[4] in record.getMessage()
    assert decoded == paths
    # a rerun decodes nothing: good rows come from the cache, bad files are remembered
    decoded.clear()
    again, skipped_again = skipping(unreadable, cache_dir)
    assert decoded == [] and skipped_again == skipped
    np.testing.assert_array_equal(np.asarray(again), np.asarray(waves))
    # the default still stops at an unreadable labeled file, naming it
    with pytest.raises(AudioError, match="clip1.wav"):
        load(unreadable, cache_dir)


def test_skipping_retries_a_changed_file(unreadable, tmp_path, decoded):
    cache_dir = tmp_path / "cache"
    skipping(unreadable, cache_dir)
    write_clip(unreadable["path"][4], 440)  # fixed: new size and mtime
    os.chmod(unreadable["path"][1], 0o644)  # same bytes, but chmod may have made it readable
    decoded.clear()
    waves, skipped = skipping(unreadable, cache_dir)
    assert decoded == [unreadable["path"][1], unreadable["path"][4]]
    assert [p for p, _ in skipped] == [unreadable["path"][1]]
    assert_matches(np.asarray(waves), unreadable.drop(index=[1]))
    decoded.clear()
    skipping(unreadable, cache_dir)
    assert decoded == []


def test_skipping_retries_after_a_decoder_change(unreadable, tmp_path, decoded, monkeypatch):
    cache_dir = tmp_path / "cache"
    skipping(unreadable, cache_dir)
    monkeypatch.setattr(cache, "DECODER_REVISION", cache.DECODER_REVISION + 1)
    decoded.clear()
    skipping(unreadable, cache_dir)
    assert decoded == [unreadable["path"][1], unreadable["path"][4]]


def test_skipping_a_grown_folder_decodes_only_the_new_file(unreadable, tmp_path, decoded):
    cache_dir = tmp_path / "cache"
    skipping(unreadable, cache_dir)
    new = tmp_path / "audio" / "new.wav"
    write_clip(new, 900)
    grown = pd.concat([unreadable, pd.DataFrame({"path": [str(new)]})], ignore_index=True)
    decoded.clear()
    waves, skipped = skipping(grown, cache_dir)
    assert decoded == [str(new)] and len(skipped) == 2
    assert_matches(np.asarray(waves), grown.drop(index=[1, 4]))
    assert len(cache_files(cache_dir)) == 2  # like a complete cache, the finished one is kept


def test_skipping_lists_at_most_20_files_and_fails_when_none_is_readable(tmp_path, caplog):
    paths = []
    for i in range(23):
        paths.append(tmp_path / f"bad{i:02d}.wav")
        paths[-1].write_bytes(b"junk" * 50)
    with pytest.raises(AudioError, match="none of the 23 files could be decoded"):
        skipping(pd.DataFrame({"path": [str(p) for p in paths]}), tmp_path / "cache")
    write_clip(tmp_path / "good.wav", 440)
    df = pd.DataFrame({"path": [str(tmp_path / "good.wav")] + [str(p) for p in paths]})
    with caplog.at_level(logging.WARNING, logger="csr.cache"):
        waves, skipped = skipping(df, tmp_path / "cache")
    assert waves.shape == (1, N_SAMPLES) and len(skipped) == 23
    message = caplog.records[-1].getMessage()
    assert "skipping 23 of 24" in message and "bad19.wav" in message and "bad20.wav" not in message
    assert "... and 3 more" in message


def test_skipping_without_failures_returns_the_memmap(clips, tmp_path):
    waves, skipped = skipping(clips, tmp_path / "cache")
    assert skipped == [] and isinstance(waves, np.memmap)
    np.testing.assert_array_equal(waves, load(clips, tmp_path / "cache"))


@pytest.mark.slow
def test_skipping_with_worker_processes(unreadable, tmp_path):
    waves, skipped = skipping(unreadable, tmp_path / "cache", workers=2)
    assert [p for p, _ in skipped] == [unreadable["path"][1], unreadable["path"][4]]
    assert_matches(np.asarray(waves), unreadable.drop(index=[1, 4]))


# ---------------------------------------------------------------- read-only folders, permissions

@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only: with chmod, or for root (whom chmod does not stop) by refusing
    every write into it, as a read-only mount does."""

    chmodded = []

    def apply(folder):
        folder = Path(folder)
        if os.geteuid() != 0:
            folder.chmod(0o555)
            chmodded.append(folder)
            return
        real_open, real_os_open = builtins.open, os.open

        def inside(path):
            return Path(os.path.abspath(os.fspath(path))).parent == folder

        def guarded_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and inside(file):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
            return real_open(file, mode, *args, **kwargs)

        def guarded_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real_os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)

    yield apply
    for folder in chmodded:
        folder.chmod(0o755)  # so tmp_path can be cleaned up


def test_finished_cache_in_read_only_folder_is_used(unreadable, tmp_path, decoded, read_only):
    cache_dir = tmp_path / "cache"
    good = unreadable.drop(index=[1, 4])
    expected_waves = np.array(load(good, cache_dir))
    _, skipped = skipping(unreadable, cache_dir)
    read_only(cache_dir)
    decoded.clear()
    np.testing.assert_array_equal(load(good, cache_dir), expected_waves)
    waves, skipped_again = skipping(unreadable, cache_dir)
    np.testing.assert_array_equal(np.asarray(waves), expected_waves)
    assert decoded == [] and skipped_again == skipped


def test_read_only_folder_that_needs_building_is_a_clear_error(clips, tmp_path, read_only):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    read_only(cache_dir)
    with pytest.raises(CacheError) as info:
        load(clips, cache_dir)
    assert str(cache_dir) in str(info.value) and "not writable" in str(info.value)
    assert "--cache_dir" in str(info.value)


def test_real_read_only_folder(clips, tmp_path, decoded):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod does not stop root writing (the simulated tests cover it)")
    cache_dir = tmp_path / "cache"
    good = np.array(load(clips, cache_dir))
    cache_dir.chmod(0o555)
    try:
        decoded.clear()
        np.testing.assert_array_equal(load(clips, cache_dir), good)
        assert decoded == []
        with pytest.raises(CacheError, match="not writable"):
            load(clips.iloc[:3], cache_dir)
    finally:
        cache_dir.chmod(0o755)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_cache_files_follow_the_umask(clips, tmp_path, umask):
    cache_dir = tmp_path / "cache"
    old = os.umask(umask)
    try:
        load(clips, cache_dir)
    finally:
        os.umask(old)
    for name in cache_files(cache_dir) + cache_files(cache_dir, ".json") + [".lock"]:
        assert stat.S_IMODE((cache_dir / name).stat().st_mode) == 0o666 & ~umask, name
