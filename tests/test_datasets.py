"""csr.datasets: table layouts, label mapping, validation errors, label fractions and fold splits."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from csr.audio import load_audio
from csr.datasets import (
    DatasetError,
    esc50,
    from_csv,
    label_fraction,
    split_fold,
    split_warnings,
    unlabeled_folder,
    urbansound8k,
)

ESC10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "esc10"
ESC_HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def touch_audio(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(16, dtype=np.float32), 8000)


def make_esc(root, rows, create=True):
    """rows: (filename, fold, target, category, esc10) tuples in an ESC-50 layout."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    lines = [f"{f},{fold},{t},{c},{e},1,A\n" for f, fold, t, c, e in rows]
    (root / "meta" / "esc50.csv").write_text(ESC_HEADER + "".join(lines))
    if create:
        for f, *_ in rows:
            touch_audio(root / "audio" / f)
    return root


def small_esc(root):
    rows = []
    for fold in (1, 2):
        rows += [(f"{fold}-1-A-0.wav", fold, 0, "dog", True), (f"{fold}-2-A-41.wav", fold, 41, "chainsaw", True),
                 (f"{fold}-3-A-5.wav", fold, 5, "cow", False), (f"{fold}-4-A-7.wav", fold, 7, "insects", False)]
    return make_esc(root, rows)


def make_us8k(root, rows, create=True):
    """rows: (slice_file_name, fold, classID, class)."""
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    text = "slice_file_name,fsID,start,end,salience,fold,classID,class\n"
    text += "".join(f"{n},1,0.0,4.0,1,{f},{c},{name}\n" for n, f, c, name in rows)
    (root / "metadata" / "UrbanSound8K.csv").write_text(text)
    if create:
        for n, f, *_ in rows:
            touch_audio(root / "audio" / f"fold{f}" / n)
    return root


def error_text(fn, *args, **kwargs):
    with pytest.raises(DatasetError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- real ESC-10

@pytest.fixture
def real_esc10():
    if not (ESC10 / "meta" / "esc50.csv").is_file():
        pytest.skip(f"real ESC-10 data not found at {ESC10}")
    return ESC10


def test_real_esc10_table(real_esc10):
    df = esc50(real_esc10, "esc10")
    assert len(df) == 400
    assert df["fold"].value_counts().sort_index().to_dict() == {f: 80 for f in range(1, 6)}
    assert df["label"].value_counts().sort_index().to_dict() == {k: 40 for k in range(10)}
    # labels follow ESC-50 target order: dog (0) first, chainsaw (41) last
    names = df.groupby("label")["category"].first()
    assert names[0] == "dog" and names[9] == "chainsaw"
    assert sorted(df.groupby("label")["target"].first()) == [0, 1, 10, 11, 12, 20, 21, 38, 40, 41]
    assert all(os.path.isabs(p) and p.endswith(".ogg") and os.path.isfile(p) for p in df["path"])
    assert list(df.index) == list(range(400))
    assert len(esc50(real_esc10, "esc50")) == 400  # the file holds only ESC-10's rows
    assert "selects no rows" in error_text(esc50, real_esc10, "esc40")


# ---------------------------------------------------------------- ESC-50 layout

def test_esc_subsets_and_contiguous_labels(tmp_path):
    root = small_esc(tmp_path)
    full = esc50(root)
    assert list(full.columns[:4]) == ["path", "fold", "label", "category"]
    assert dict(zip(full["target"], full["label"])) == {0: 0, 5: 1, 7: 2, 41: 3}
    esc10 = esc50(root, "esc10")
    assert set(esc10["category"]) == {"dog", "chainsaw"}
    assert dict(zip(esc10["target"], esc10["label"])) == {0: 0, 41: 1}
    esc40 = esc50(root, "esc40")
    assert dict(zip(esc40["target"], esc40["label"])) == {5: 0, 7: 1}
    assert esc40["path"].iloc[0] == str(root / "audio" / "1-3-A-5.wav")
    assert "unknown ESC subset" in error_text(esc50, root, "esc20")


def test_esc_missing_metadata(tmp_path):
    message = error_text(esc50, tmp_path)
    assert str(tmp_path / "meta" / "esc50.csv") in message and "not found" in message


def test_esc_missing_columns(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,target\na.wav,0\n")
    message = error_text(esc50, tmp_path)
    assert "missing column" in message and "'fold'" in message and "'category'" in message
    assert str(tmp_path / "meta" / "esc50.csv") in message


@pytest.mark.parametrize("fold,words", [("x", ["non-integer", "'fold'", "line 2: 'x'"]),
                                        ("1.5", ["non-integer", "line 2"]),
                                        ("6", ["outside 1..5", "line 2: 6"])])
def test_esc_bad_fold(tmp_path, fold, words):
    make_esc(tmp_path, [("a.wav", fold, 0, "dog", True)], create=False)
    message = error_text(esc50, tmp_path, validate_files=False)
    for word in words:
        assert word in message


def test_esc_unknown_target_and_inconsistent_category(tmp_path):
    make_esc(tmp_path, [("a.wav", 1, 50, "dog", True)], create=False)
    assert "'target' outside 0..49" in error_text(esc50, tmp_path, validate_files=False)
    make_esc(tmp_path, [("a.wav", 1, 0, "dog", True), ("b.wav", 1, 0, "cat", True)], create=False)
    assert "more than one name" in error_text(esc50, tmp_path, validate_files=False)


def test_esc_bad_esc10_flag(tmp_path):
    make_esc(tmp_path, [("a.wav", 1, 0, "dog", "maybe")], create=False)
    assert "True/False" in error_text(esc50, tmp_path, "esc10", validate_files=False)
    assert len(esc50(tmp_path, "esc50", validate_files=False)) == 1  # only subsets read it


def test_duplicate_rows(tmp_path):
    make_esc(tmp_path, [("a.wav", 1, 0, "dog", True), ("a.wav", 2, 0, "dog", True)])
    message = error_text(esc50, tmp_path)
    assert "more than once" in message and str(tmp_path / "audio" / "a.wav") in message


def test_all_missing_files_in_one_error(tmp_path):
    rows = [(f"{i:02d}.wav", 1, 0, "dog", True) for i in range(25)]
    make_esc(tmp_path, rows, create=False)
    touch_audio(tmp_path / "audio" / "00.wav")
    message = error_text(esc50, tmp_path)
    assert "24 of 25 audio file(s) missing" in message
    assert str(tmp_path / "audio" / "01.wav") in message and "... and 4 more" in message
    assert str(tmp_path / "audio" / "00.wav") not in message
    assert len(esc50(tmp_path, validate_files=False)) == 25


# ---------------------------------------------------------------- UrbanSound8K layout

def test_urbansound8k(tmp_path):
    rows = [("a.wav", 1, 3, "dog_bark"), ("b.wav", 10, 0, "air_conditioner"), ("c.wav", 5, 9, "street_music")]
    make_us8k(tmp_path, rows)
    df = urbansound8k(tmp_path)
    assert list(df["path"]) == [str(tmp_path / "audio" / "fold1" / "a.wav"),
                                str(tmp_path / "audio" / "fold10" / "b.wav"),
                                str(tmp_path / "audio" / "fold5" / "c.wav")]
    assert list(df["fold"]) == [1, 10, 5] and list(df["target"]) == [3, 0, 9]
    assert list(df["label"]) == [1, 0, 2]  # contiguous even when classes are absent
    assert list(df["category"]) == ["dog_bark", "air_conditioner", "street_music"]


def test_urbansound8k_full_class_set_keeps_class_ids(tmp_path):
    rows = [(f"{c}.wav", 1 + c % 10, c, f"class{c}") for c in range(10)]
    make_us8k(tmp_path, rows)
    df = urbansound8k(tmp_path)
    assert list(df["label"]) == list(range(10))


def test_urbansound8k_bad_fold_and_class(tmp_path):
    make_us8k(tmp_path, [("a.wav", 11, 0, "x")], create=False)
    assert "outside 1..10" in error_text(urbansound8k, tmp_path, validate_files=False)
    make_us8k(tmp_path, [("a.wav", 1, 10, "x")], create=False)
    assert "'classID' outside 0..9" in error_text(urbansound8k, tmp_path, validate_files=False)
    (tmp_path / "metadata" / "UrbanSound8K.csv").write_text("slice_file_name,fold\na.wav,1\n")
    message = error_text(urbansound8k, tmp_path)
    assert "'classID'" in message and "'class'" in message and "UrbanSound8K.csv" in message


# ---------------------------------------------------------------- user CSV / folder

def test_from_csv_relative_paths_labels_and_folds(tmp_path):
    for name in ("x/a.wav", "x/b.wav", "c.wav"):
        touch_audio(tmp_path / name)
    csv = tmp_path / "data.csv"
    csv.write_text("path,label,fold\nx/a.wav,siren,1\nx/b.wav,bird,2\n" + f"{tmp_path / 'c.wav'},bird,2\n")
    df = from_csv(csv)
    assert list(df["path"]) == [str(tmp_path / "x" / "a.wav"), str(tmp_path / "x" / "b.wav"),
                                str(tmp_path / "c.wav")]
    assert list(df["label"]) == [1, 0, 0] and list(df["category"]) == ["siren", "bird", "bird"]
    assert list(df["fold"]) == [1, 2, 2]
    # relative to an explicit root instead of the CSV's folder
    (tmp_path / "sub").mkdir()
    csv2 = tmp_path / "sub" / "d.csv"
    csv2.write_text("path,label\nx/a.wav,1\n")
    assert from_csv(csv2, root=tmp_path)["path"].iloc[0] == str(tmp_path / "x" / "a.wav")


def test_from_csv_numeric_labels_sort_numerically_and_default_folds(tmp_path):
    lines = [f"f{i}.wav,{label}\n" for i, label in enumerate([10] * 7 + [9] * 3 + [2] * 5)]
    csv = tmp_path / "d.csv"
    csv.write_text("path,label\n" + "".join(lines))
    df = from_csv(csv, validate_files=False)
    assert dict(zip(df["category"], df["label"])) == {"2": 0, "9": 1, "10": 2}
    # stratified: the i-th clip of each class goes to fold i % 5 + 1
    assert list(df["fold"][df["category"] == "10"]) == [1, 2, 3, 4, 5, 1, 2]
    assert list(df["fold"][df["category"] == "9"]) == [1, 2, 3]
    df3 = from_csv(csv, validate_files=False, num_folds=3)
    assert set(df3["fold"]) == {1, 2, 3}


def test_from_csv_errors(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("file,label\na.wav,x\n")
    message = error_text(from_csv, csv)
    assert "missing column" in message and "'path'" in message and str(csv) in message
    csv.write_text("path,label\na.wav,\n")
    assert "empty 'label'" in error_text(from_csv, csv, validate_files=False)
    csv.write_text("path,label,fold\na.wav,x,0\n")
    assert "fold values must be >= 1" in error_text(from_csv, csv, validate_files=False)
    csv.write_text("path,label\na.wav,x\nb.wav,y\n")
    message = error_text(from_csv, csv)
    assert "2 of 2 audio file(s) missing" in message and str(tmp_path / "b.wav") in message
    csv.write_text("path,label\n")
    assert "no clips" in error_text(from_csv, csv)
    assert "not found" in error_text(from_csv, tmp_path / "absent.csv")


def test_unlabeled_folder(tmp_path):
    for name in ("b/z.flac", "a.WAV", "b/c/y.ogg", "notes.txt", ".hidden.wav", "._a.wav", ".git/x.wav"):
        path = tmp_path / name
        if name.endswith("txt"):
            path.write_text("hi")
        elif name.lower().endswith(".wav") and "hidden" not in name and not name.startswith(("._", ".git")):
            touch_audio(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".ogg":
                sf.write(path, np.zeros(800, np.float32), 8000, format="OGG", subtype="VORBIS")
            elif path.suffix == ".flac":
                sf.write(path, np.zeros(16, np.float32), 8000, format="FLAC")
            else:
                path.write_bytes(b"x")
    df = unlabeled_folder(tmp_path)
    assert list(df["path"]) == sorted(str(tmp_path / n) for n in ("a.WAV", "b/z.flac", "b/c/y.ogg"))
    assert set(df["label"]) == {-1} and set(df["fold"]) == {0} and set(df["category"]) == {""}
    (tmp_path / "empty").mkdir()
    assert "no audio files" in error_text(unlabeled_folder, tmp_path / "empty")
    assert "folder not found" in error_text(unlabeled_folder, tmp_path / "absent")


# ---------------------------------------------------------------- fractions and folds

def esc10_like():
    """10 classes x 5 folds x 8 clips, as ESC-10."""
    rows = [(f"/d/{c}-{f}-{i}.wav", f, c, f"c{c}") for c in range(10) for f in range(1, 6) for i in range(8)]
    return pd.DataFrame(rows, columns=["path", "fold", "label", "category"])


def test_label_fraction_esc10_at_ten_percent_gives_three_per_class():
    train, _ = split_fold(esc10_like(), 1)
    assert set(train["label"].value_counts()) == {32}
    picked = label_fraction(train, 0.1, seed=0)
    assert picked["label"].value_counts().to_dict() == {c: 3 for c in range(10)}
    assert picked.index.is_monotonic_increasing and set(picked.index) <= set(train.index)
    pd.testing.assert_frame_equal(picked, train.loc[picked.index])


def test_label_fraction_floor_min_one_and_float_edge():
    labels = [0] * 7 + [1] * 3 + [2] * 1 + [3] * 100
    df = pd.DataFrame({"path": [f"/p{i}" for i in range(len(labels))], "fold": 1, "label": labels,
                       "category": "x"})
    counts = label_fraction(df, 0.5, seed=1)["label"].value_counts().to_dict()
    assert counts == {0: 3, 1: 1, 2: 1, 3: 50}
    assert label_fraction(df, 0.29, seed=1)["label"].value_counts()[3] == 29  # 0.29*100 in floats
    pd.testing.assert_frame_equal(label_fraction(df, 1.0, seed=3), df)


def test_label_fraction_deterministic_by_seed():
    df = esc10_like()
    a, b = label_fraction(df, 0.1, 7), label_fraction(df, 0.1, 7)
    assert list(a.index) == list(b.index)
    assert list(label_fraction(df, 0.1, 8).index) != list(a.index)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, "half"])
def test_label_fraction_rejects_bad_fraction(fraction):
    assert "fraction" in error_text(label_fraction, esc10_like(), fraction, 0)


def test_split_fold():
    df = esc10_like()
    train, test = split_fold(df, 3)
    assert set(test["fold"]) == {3} and 3 not in set(train["fold"])
    assert len(train) + len(test) == len(df) and not set(train.index) & set(test.index)
    message = error_text(split_fold, df, 6)
    assert "fold 6" in message and "[1, 2, 3, 4, 5]" in message
    assert "no training rows" in error_text(split_fold, df[df["fold"] == 2], 2)


# ---------------------------------------------------------------- file names that are not UTF-8

def non_utf8_name(folder, name=b"caf\xe9.wav"):
    """Create an audio file whose name is not valid UTF-8; its str path (surrogate escapes)."""
    path = os.path.join(os.fsencode(folder), name)
    try:
        sf.write(path, np.sin(np.arange(800) / 3).astype(np.float32), 8000)
    except (OSError, sf.LibsndfileError) as err:
        pytest.skip(f"file system refuses a non-UTF-8 name: {err}")
    return os.fsdecode(path)


def test_unlabeled_folder_with_non_utf8_name(tmp_path):
    path = non_utf8_name(tmp_path)
    touch_audio(tmp_path / "plain.wav")
    df = unlabeled_folder(tmp_path)
    assert list(df["path"]) == sorted([path, str(tmp_path / "plain.wav")])
    for p in df["path"]:
        assert load_audio(p, sr=8000, seconds=0.1).shape == (800,)


def test_from_csv_with_non_utf8_path_bytes(tmp_path):
    path = non_utf8_name(tmp_path)
    csv = tmp_path / "d.csv"
    csv.write_bytes(b"path,label\ncaf\xe9.wav,caf\xc3\xa9\n")  # the label is UTF-8 'café'
    df = from_csv(csv)
    assert list(df["path"]) == [path] and list(df["category"]) == ["caf\u00e9"]
    assert load_audio(df["path"][0], sr=8000, seconds=0.1).shape == (800,)
    # names must be text: a label that is not UTF-8 is an error naming the line
    csv.write_bytes(b"path,label\ncaf\xe9.wav,d\xe9g\n")
    message = error_text(from_csv, csv)
    assert "'label'" in message and "not valid UTF-8" in message and "line 2" in message
    # a CSV saved in Latin-1 names files that do not exist: the error says why
    csv.write_bytes(b"path,label\ncaf\xe8.wav,x\n")
    message = error_text(from_csv, csv)
    assert "1 of 1 audio file(s) missing" in message and "caf\\udce8.wav" in message
    assert "save it as UTF-8" in message


# ---------------------------------------------------------------- thin splits

def table(rows):
    """rows: (label, category, fold) tuples."""
    return pd.DataFrame([(f"/d/{i}.wav", fold, label, name) for i, (label, name, fold) in enumerate(rows)],
                        columns=["path", "fold", "label", "category"])


def test_split_warnings_silent_for_a_healthy_split():
    train, test = split_fold(esc10_like(), 2)
    assert split_warnings(train, test, fold=2) == []
    train = label_fraction(train, 0.1, seed=0)  # 3 clips per class
    assert split_warnings(train, test, fold=2) == []


def test_split_warnings_single_clip_and_unseen_class():
    rows = ([(0, "dog", 1)] * 4 + [(0, "dog", 2)] * 3 + [(1, "rain", 1)] + [(1, "rain", 2)] * 2
            + [(2, "siren", 2)] * 2)
    train, test = split_fold(table(rows), 2)
    warnings = split_warnings(train, test, fold=2)
    assert warnings == [
        "class 'rain' has 1 training clip: its accuracy rests on one example",
        "class 'siren' has no training clip in this split: the model cannot predict it, so test "
        "accuracy is at most 71.4 % (5 of 7 test clips)"]


def test_split_warnings_name_many_classes_once():
    rows = [(c, f"c{c}", 1) for c in range(12)] + [(c, f"c{c}", 2) for c in range(12)] * 3
    train, test = split_fold(table(rows), 2)
    (warning,) = [w for w in split_warnings(train, test, 2) if "1 training clip" in w]
    assert warning.startswith("12 classes ('c0', 'c1',")
    assert "'c9' and 2 more) have 1 training clip each" in warning
    assert warning.endswith("their accuracy rests on one example each")


def test_split_warnings_tiny_test_fold_and_untested_class():
    rows = [(0, "dog", 1)] * 5 + [(1, "rain", 1)] * 5 + [(0, "dog", 3)] * 2
    train, test = split_fold(table(rows), 3)
    assert split_warnings(train, test, fold=3) == [
        "class 'rain' has no clip in fold 3: this split does not measure how well the model "
        "recognises it",
        "fold 3 holds 2 test clips: each is worth 50 % accuracy, so this fold's accuracy is mostly "
        "chance; judge the mean over folds"]
    one = split_warnings(train, test.iloc[:1])[-1]
    assert one.startswith("the test fold holds 1 test clip: each is worth 100 % accuracy")
    none = split_warnings(train, test.iloc[:0])[-1]
    assert none == "the test fold holds no test clips: no accuracy can be measured"


def test_split_warnings_for_a_user_csv_with_a_thin_fold(tmp_path):
    csv = tmp_path / "d.csv"
    lines = [f"a{i}.wav,bird,1" for i in range(6)] + [f"b{i}.wav,frog,1" for i in range(6)]
    lines += ["c0.wav,bird,2", "c1.wav,owl,2", "c2.wav,owl,1"]
    csv.write_text("path,label,fold\n" + "\n".join(lines) + "\n")
    df = from_csv(csv, validate_files=False)
    train, test = split_fold(df, 2)
    warnings = split_warnings(train, test, fold=2)
    assert warnings[0] == "class 'owl' has 1 training clip: its accuracy rests on one example"
    assert warnings[1].startswith("class 'frog' has no clip in fold 2")
    assert warnings[2].startswith("fold 2 holds 2 test clips: each is worth 50 % accuracy")
    # without a fold column, a class with fewer clips than folds misses the folds it cannot fill
    csv.write_text("path,label\n" + "\n".join(f"{c}{i}.wav,{c}" for c in "xy" for i in range(6))
                   + "\nz0.wav,z\n")
    df = from_csv(csv, validate_files=False)
    train, test = split_fold(df, 1)
    assert any(w.startswith("class 'z' has no training clip in this split") and "at most 80.0 % (4 of 5" in w
               for w in split_warnings(train, test, fold=1))
