"""csr.cache: build once, reuse, rebuild on changed/truncated/corrupted data, resume after failures."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from csr import cache
from csr.audio import AudioError, load_audio
from csr.cache import file_checksum, load_waveforms

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


def test_progress_bar(clips, tmp_path, capsys):
    load_waveforms(clips.iloc[:2], tmp_path / "cache", sr=SR, seconds=SECONDS, progress=True)
    assert "2/2" in capsys.readouterr().err


@pytest.mark.slow
def test_worker_processes_give_the_same_cache(clips, tmp_path):
    serial = load(clips, tmp_path / "a")
    parallel = load(clips, tmp_path / "b", workers=2)
    np.testing.assert_array_equal(parallel, serial)
