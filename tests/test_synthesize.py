"""csr.synthesize: the synthetic sets have the real datasets' layouts, are deterministic by seed,
balanced, and their classes are separable by a crude spectral feature."""

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from csr import synthesize as syn

REPO = Path(__file__).resolve().parents[1]
SHARED_ESC_CSV = REPO.parent / "shared" / "data" / "esc10" / "meta" / "esc50.csv"
US8K_HEADER = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """The default set (80 ESC-like + 80 US8K-like clips), generated once for this module."""
    return syn.synthesize(tmp_path_factory.mktemp("synth") / "out", seed=0)


def read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def tree_hashes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------- layout
def test_esc_csv_header_is_esc50s(synth):
    header, _ = read_csv(synth.esc / "meta" / "esc50.csv")
    assert header == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    if not SHARED_ESC_CSV.is_file():
        print(f"skipping comparison with the real header: {SHARED_ESC_CSV} not found")
        return
    with open(SHARED_ESC_CSV, newline="") as f:
        assert header == next(csv.reader(f))


def test_esc_files_named_and_encoded_like_esc50(synth):
    _, rows = read_csv(synth.esc / "meta" / "esc50.csv")
    assert [r["filename"] for r in rows] == sorted(r["filename"] for r in rows)
    assert sorted(p.name for p in (synth.esc / "audio").iterdir()) == sorted(
        r["filename"] for r in rows)
    for r in rows:
        fold, src, take, target = re.fullmatch(r"(\d)-(\d+)-([A-Z])-(\d+)\.wav",
                                               r["filename"]).groups()
        assert (fold, src, take, target) == (r["fold"], r["src_file"], r["take"], r["target"])
        assert r["category"] == syn.ESC_CLASSES[int(target)][0] and r["esc10"] == "True"
        info = sf.info(synth.esc / "audio" / r["filename"])
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (
            22_050, 1, "PCM_16", 110_250)


def test_esc_class_and_fold_balance(synth):
    _, rows = read_csv(synth.esc / "meta" / "esc50.csv")
    counts = np.zeros((10, 5), int)
    for r in rows:
        counts[int(r["target"]), int(r["fold"]) - 1] += 1
    assert counts.sum() == 80
    assert (counts.sum(axis=1) == 8).all()  # 8 per class
    assert (counts.sum(axis=0) == 16).all()  # 5 folds of 16
    assert set(counts.ravel()) <= {1, 2}  # every class in every fold, spread evenly


def test_us8k_layout_formats_and_durations(synth):
    header, rows = read_csv(synth.us8k / "metadata" / "UrbanSound8K.csv")
    assert header == US8K_HEADER
    formats, listed = set(), set()
    for r in rows:
        fs_id, class_id = re.fullmatch(r"(\d+)-(\d+)-0-0\.wav", r["slice_file_name"]).groups()
        assert (fs_id, class_id) == (r["fsID"], r["classID"])
        assert r["class"] == syn.US8K_CLASSES[int(class_id)][0] and r["salience"] in {"1", "2"}
        path = synth.us8k / "audio" / f"fold{r['fold']}" / r["slice_file_name"]
        listed.add(path)
        info = sf.info(path)
        formats.add((info.subtype, info.samplerate, info.channels))
        assert 1.0 <= info.duration <= 4.0
        assert float(r["end"]) - float(r["start"]) == pytest.approx(info.duration, abs=1e-3)
        if info.subtype == "FLOAT":  # libsndfile's PEAK-chunk timestamp must be zeroed
            head = path.read_bytes()[:512]
            assert head[head.index(b"PEAK") + 12:][:4] == bytes(4)
    assert formats == set(syn.US8K_FORMATS)  # 8-bit, 16, 24-bit, float; mono and stereo; 16-48k
    assert {"PCM_U8", "PCM_24", "FLOAT"} <= {f[0] for f in formats}
    assert set((synth.us8k / "audio").rglob("*.wav")) == listed
    assert sorted(p.name for p in (synth.us8k / "audio").iterdir()) == sorted(
        f"fold{i}" for i in range(1, 11))


def test_us8k_balance_and_classes_differ_from_esc(synth):
    _, rows = read_csv(synth.us8k / "metadata" / "UrbanSound8K.csv")
    by_fold = {}
    for r in rows:
        by_fold.setdefault(int(r["fold"]), []).append(int(r["classID"]))
    assert sorted(by_fold) == list(range(1, 11))
    assert all(sorted(c) == list(range(8)) for c in by_fold.values())  # one of each class per fold
    assert not {n for n, _ in syn.US8K_CLASSES} & {n for n, _ in syn.ESC_CLASSES}


# ---------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_different_seed_different_audio(tmp_path):
    small = dict(esc_clips_per_class=1, us8k_clips_per_fold=1)
    a = tree_hashes(syn.synthesize(tmp_path / "a", seed=7, **small).esc.parent)
    b = tree_hashes(syn.synthesize(tmp_path / "b", seed=7, **small).esc.parent)
    c = tree_hashes(syn.synthesize(tmp_path / "c", seed=8, **small).esc.parent)
    assert len(a) == 10 + 10 + 2 + 2  # wavs, two CSVs, two markers
    assert a == b
    wavs = [k for k in a if k.endswith(".wav")]
    assert sorted(wavs) == sorted(k for k in c if k.endswith(".wav"))  # same names...
    assert all(a[k] != c[k] for k in wavs)  # ...different audio


def test_rerun_replaces_own_output_and_refuses_foreign_folder(tmp_path):
    out = syn.synthesize_esc(tmp_path / "esc", seed=0, clips_per_class=1)
    (out / "audio" / "stale.wav").write_bytes(b"old")
    syn.synthesize_esc(out, seed=0, clips_per_class=1)
    assert not (out / "audio" / "stale.wav").exists()
    foreign = tmp_path / "ESC-50"
    (foreign / "meta").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=f"{foreign} is not empty"):
        syn.synthesize_esc(foreign, seed=0, clips_per_class=1)
    assert (foreign / "meta").is_dir()


def test_esc10_classes_flag_splits_esc10_and_esc40(tmp_path):
    out = syn.synthesize_esc(tmp_path / "esc", clips_per_class=1, esc10_classes=5)
    _, rows = read_csv(out / "meta" / "esc50.csv")
    assert {(int(r["target"]) < 5) for r in rows if r["esc10"] == "True"} == {True}
    assert sum(r["esc10"] == "True" for r in rows) == 5
    with pytest.raises(ValueError, match="esc10_classes"):
        syn.synthesize_esc(tmp_path / "bad", esc10_classes=0)


# ----------------------------------------------------------------------------------- learnability
def crude_features(path) -> np.ndarray:
    """Log energies in 16 log-spaced bands (50 Hz-8 kHz) over the loudest 30% of 46-ms frames:
    mean, std and mean absolute frame-to-frame change. Rate-independent (bands in Hz)."""
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    frame = int(0.046 * sr)
    hop = frame // 2
    n = 1 + max(len(x) - frame, 0) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    power = np.abs(np.fft.rfft(np.pad(x, (0, frame))[idx] * np.hanning(frame), axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1 / sr)
    edges = np.geomspace(50, 8000, 17)
    bands = np.log10(np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(1)
                               for lo, hi in zip(edges[:-1], edges[1:])], 1) + 1e-10)
    loud = bands.max(1) >= np.percentile(bands.max(1), 70)
    return np.concatenate([bands[loud].mean(0), bands[loud].std(0),
                           np.abs(np.diff(bands, axis=0)).mean(0)])


def nearest_class_mean_accuracy(features, labels, folds) -> float:
    """Leave-one-fold-out accuracy of a nearest-class-mean classifier on standardised features."""
    correct = 0
    for f in np.unique(folds):
        train, test = folds != f, folds == f
        z = (features - features[train].mean(0)) / (features[train].std(0) + 1e-9)
        classes = np.unique(labels[train])
        means = np.stack([z[train & (labels == c)].mean(0) for c in classes])
        dist = ((z[test][:, None, :] - means[None]) ** 2).sum(-1)
        correct += int((classes[dist.argmin(1)] == labels[test]).sum())
    return correct / len(labels)


def test_classes_are_separable_well_above_chance(synth):
    _, esc = read_csv(synth.esc / "meta" / "esc50.csv")
    x = np.stack([crude_features(synth.esc / "audio" / r["filename"]) for r in esc])
    acc_esc = nearest_class_mean_accuracy(x, np.array([int(r["target"]) for r in esc]),
                                          np.array([int(r["fold"]) for r in esc]))
    _, us = read_csv(synth.us8k / "metadata" / "UrbanSound8K.csv")
    x = np.stack([crude_features(synth.us8k / "audio" / f"fold{r['fold']}" / r["slice_file_name"])
                  for r in us])
    acc_us = nearest_class_mean_accuracy(x, np.array([int(r["classID"]) for r in us]),
                                         np.array([int(r["fold"]) for r in us]))
    print(f"nearest-class-mean accuracy: esc {acc_esc:.3f} (chance 0.1), "
          f"us8k {acc_us:.3f} (chance 0.125)")
    assert acc_esc >= 0.5 and acc_us >= 0.5


def test_events_differ_from_background(synth):
    """Each clip has an event standing above its background: loudest vs quietest 10% frames."""
    _, rows = read_csv(synth.esc / "meta" / "esc50.csv")
    for r in rows[::7]:
        x, _ = sf.read(synth.esc / "audio" / r["filename"])
        rms = np.sqrt((x[: len(x) // 1024 * 1024].reshape(-1, 1024) ** 2).mean(1))
        assert 20 * np.log10(np.percentile(rms, 95) / np.percentile(rms, 5)) > 8, r["filename"]


# -------------------------------------------------------------------------------- loaders and CLI
def test_project_loaders_read_the_synthetic_sets(synth):
    datasets = pytest.importorskip("csr.datasets")
    audio = pytest.importorskip("csr.audio")
    for subset in ("esc10", "esc50"):
        df = datasets.esc50(synth.esc, subset)
        assert len(df) == 80 and sorted(df["label"].unique()) == list(range(10))
        assert sorted(df["fold"].unique()) == [1, 2, 3, 4, 5]
    us = datasets.urbansound8k(synth.us8k)
    assert len(us) == 80 and sorted(us["label"].unique()) == list(range(8))
    assert sorted(us["fold"].unique()) == list(range(1, 11))
    for path in us["path"][:len(syn.US8K_FORMATS)]:  # one file of every format
        clip = audio.load_audio(path)
        assert clip.shape == (110_250,) and np.isfinite(clip).all() and clip.any()


def test_cli_writes_both_sets(tmp_path, capsys):
    from csr.cli import synthesize as cli
    assert cli.run(["--out", str(tmp_path / "s"), "--seed", "3", "--clips_per_class", "1",
                     "--us8k_clips_per_fold", "1"]) == 0
    _, rows = read_csv(tmp_path / "s" / "esc" / "meta" / "esc50.csv")
    _, us = read_csv(tmp_path / "s" / "us8k" / "metadata" / "UrbanSound8K.csv")
    assert len(rows) == 10 and len(us) == 10
    assert cli.run(["--out", str(tmp_path / "s"), "--esc10_classes", "11"]) == 2
    assert "esc10_classes must be in 1..10" in capsys.readouterr().err
