"""Dataset tables: one row per clip with an absolute `path`, its `fold`, a contiguous `label` and a
`category` name, whatever layout the audio came in (ESC-50, UrbanSound8K, a user's CSV or folder).

Metadata is checked up front and every problem is reported with the CSV or file it came from, so a
broken download fails in seconds rather than hours into training. Loaders return a RangeIndex;
`label_fraction` and `split_fold` keep the index, so their rows can be looked up in a waveform cache
built for the whole dataset (`waves[subset.index]`); `split_warnings` says when a split is too thin
for its accuracy to mean much.

File names need not be valid UTF-8: a folder listing keeps them as Python's surrogate escapes, and a
CSV's path column may hold such bytes too (read with surrogateescape, so each path names the file's
exact bytes). Labels and class names must be UTF-8 text.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from csr.errors import UserError

ESC_SUBSETS = ("esc50", "esc10", "esc40")
ESC_FOLDS = range(1, 6)
ESC_NUM_CLASSES = 50
US8K_FOLDS = range(1, 11)
US8K_NUM_CLASSES = 10
DEFAULT_NUM_FOLDS = 5  # folds assigned to a user CSV that has no fold column

# Formats libsndfile (hence csr.audio) decodes; MP3 only when the installed libsndfile has it.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff"})
try:
    import soundfile as _sf

    if "MP3" in _sf.available_formats():
        AUDIO_EXTENSIONS = AUDIO_EXTENSIONS | {".mp3"}
except (ImportError, OSError):  # soundfile missing: folder listing still works for the base set
    pass

MAX_LISTED = 20  # problems shown per error message; the count is always given in full
FEW_TEST_CLIPS = 5  # below this, each test clip moves a fold's accuracy by more than 20 points


class DatasetError(UserError, ValueError):
    """Bad or inconsistent dataset metadata or files; the message says which file and why."""


def _listing(items, limit: int = MAX_LISTED) -> str:
    items = list(items)
    shown = "\n  ".join(str(i) for i in items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {shown}{more}"


def _read_csv(csv_path: Path, required: list[str]) -> pd.DataFrame:
    """Read metadata as strings (we parse each column ourselves to report bad values by line)."""
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: metadata file not found")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True,
                            encoding="utf-8", encoding_errors="surrogateescape")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{csv_path}: cannot parse CSV ({err})") from err
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DatasetError(f"{csv_path}: missing column(s) {missing}; found {list(table.columns)}")
    for column in required:
        table[column] = table[column].astype(str).str.strip()
    return table


def _has_surrogates(text: str) -> bool:
    """True for a str holding bytes that were not UTF-8 (Python's surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _printable(path: str) -> str:
    """The path with non-UTF-8 bytes shown as \\udcXX, so any terminal or log file can show it."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def _utf8_column(table: pd.DataFrame, column: str, csv_path: Path) -> None:
    """Names must be text: bytes that are not UTF-8 are allowed in paths only, where they name a
    file's exact bytes."""
    bad = [i for i, value in enumerate(table[column]) if _has_surrogates(value)]
    if bad:
        rows = [f"line {i + 2}: {table[column].iloc[i]!r}" for i in bad]
        raise DatasetError(f"{csv_path}: {len(bad)} value(s) in column '{column}' are not valid UTF-8 "
                           "(save the CSV as UTF-8):" + _listing(rows))


def _int_column(table: pd.DataFrame, column: str, csv_path: Path, allowed=None) -> np.ndarray:
    """Parse an integer column; list every non-integer or out-of-range value with its CSV line."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
    integral = np.isfinite(values) & (values == np.round(values))
    bad = np.flatnonzero(~integral)
    if bad.size:
        rows = [f"line {i + 2}: {table[column].iloc[i]!r}" for i in bad]
        raise DatasetError(f"{csv_path}: {bad.size} non-integer value(s) in column '{column}':"
                           + _listing(rows))
    ints = values.astype(np.int64)
    if allowed is not None:
        allowed = set(allowed)
        bad = [i for i, v in enumerate(ints) if v not in allowed]
        if bad:
            rows = [f"line {i + 2}: {ints[i]}" for i in bad]
            raise DatasetError(
                f"{csv_path}: {len(bad)} value(s) in column '{column}' outside "
                f"{min(allowed)}..{max(allowed)}:" + _listing(rows))
    return ints


def _check_consistent(ids: np.ndarray, names: pd.Series, csv_path: Path, what: str) -> None:
    """Each class id must carry one name (a mismatch means a corrupted or hand-edited CSV)."""
    pairs = pd.DataFrame({"id": ids, "name": names.to_numpy()}).drop_duplicates()
    clash = pairs[pairs.duplicated("id", keep=False)]
    if len(clash):
        detail = [f"{i}: {sorted(g['name'])}" for i, g in clash.groupby("id")]
        raise DatasetError(f"{csv_path}: {what} ids with more than one name:" + _listing(detail))


def _contiguous(ids) -> np.ndarray:
    """Map class ids to 0..K-1 in sorted id order (a subset such as ESC-10 keeps the id order)."""
    ids = np.asarray(ids)
    return np.searchsorted(np.unique(ids), ids).astype(np.int64)


def _finish(frame: pd.DataFrame, source, validate_files: bool) -> pd.DataFrame:
    """Common checks for every loader: non-empty, no duplicate paths, all files present."""
    if frame.empty:
        raise DatasetError(f"{source}: no clips selected")
    duplicated = frame["path"][frame["path"].duplicated(keep=False)]
    if len(duplicated):
        names = sorted(set(duplicated))
        raise DatasetError(f"{source}: {len(names)} file(s) listed more than once:" + _listing(names))
    if validate_files:
        missing = [p for p in frame["path"] if not os.path.isfile(p)]
        if missing:
            hint = ""
            if any(_has_surrogates(p) for p in missing):
                hint = ("\n(a \\udcXX in a name is a byte that is not UTF-8: if the CSV was saved in "
                        "another encoding, save it as UTF-8)")
            raise DatasetError(f"{source}: {len(missing)} of {len(frame)} audio file(s) missing:"
                               + _listing(_printable(p) for p in missing) + hint)
    frame = frame.reset_index(drop=True)
    frame["fold"] = frame["fold"].astype(np.int64)
    frame["label"] = frame["label"].astype(np.int64)
    frame["path"] = frame["path"].astype(str)
    frame["category"] = frame["category"].astype(str)
    return frame


def _absolute(root: Path, names) -> list[str]:
    return [str(Path(os.path.abspath(root / n))) for n in names]


def esc50(root, subset: str = "esc50", validate_files: bool = True) -> pd.DataFrame:
    """ESC-50 (root/meta/esc50.csv, root/audio/<filename>) or its ESC-10 / ESC-40 part.

    Columns: path, fold (1..5), label (0..K-1 in ESC target order within the subset), category,
    target (ESC-50 class id). ESC-40 is the 40 classes not in ESC-10, as in the paper.
    """
    if subset not in ESC_SUBSETS:
        raise DatasetError(f"unknown ESC subset {subset!r}; choose one of {list(ESC_SUBSETS)}")
    root = Path(root)
    csv_path = root / "meta" / "esc50.csv"
    required = ["filename", "fold", "target", "category"] + ([] if subset == "esc50" else ["esc10"])
    table = _read_csv(csv_path, required)
    folds = _int_column(table, "fold", csv_path, ESC_FOLDS)
    targets = _int_column(table, "target", csv_path, range(ESC_NUM_CLASSES))
    _utf8_column(table, "category", csv_path)
    _check_consistent(targets, table["category"], csv_path, "target")
    if subset != "esc50":
        flags = table["esc10"].str.lower()
        bad = np.flatnonzero(~flags.isin(["true", "false"]).to_numpy())
        if bad.size:
            rows = [f"line {i + 2}: {table['esc10'].iloc[i]!r}" for i in bad]
            raise DatasetError(f"{csv_path}: column 'esc10' must be True/False:" + _listing(rows))
        keep = (flags == "true").to_numpy() == (subset == "esc10")
        if not keep.any():
            raise DatasetError(f"{csv_path}: subset {subset!r} selects no rows (the metadata holds "
                               f"{len(table)} rows, none with esc10={subset == 'esc10'})")
        table, folds, targets = table[keep], folds[keep], targets[keep]
    frame = pd.DataFrame({
        "path": _absolute(root / "audio", table["filename"]),
        "fold": folds,
        "label": _contiguous(targets),
        "category": table["category"].to_numpy(),
        "target": targets,
    })
    return _finish(frame, f"{csv_path} [{subset}]", validate_files)


def urbansound8k(root, validate_files: bool = True) -> pd.DataFrame:
    """UrbanSound8K (root/metadata/UrbanSound8K.csv, root/audio/fold<N>/<slice_file_name>).

    Columns: path, fold (1..10), label (classID, made contiguous if a class is absent), category
    (class), target (classID).
    """
    root = Path(root)
    csv_path = root / "metadata" / "UrbanSound8K.csv"
    table = _read_csv(csv_path, ["slice_file_name", "fold", "classID", "class"])
    folds = _int_column(table, "fold", csv_path, US8K_FOLDS)
    targets = _int_column(table, "classID", csv_path, range(US8K_NUM_CLASSES))
    _utf8_column(table, "class", csv_path)
    _check_consistent(targets, table["class"], csv_path, "classID")
    names = [f"fold{f}/{n}" for f, n in zip(folds, table["slice_file_name"])]
    frame = pd.DataFrame({
        "path": _absolute(root / "audio", names),
        "fold": folds,
        "label": _contiguous(targets),
        "category": table["class"].to_numpy(),
        "target": targets,
    })
    return _finish(frame, csv_path, validate_files)


def _label_order(labels: pd.Series) -> list[str]:
    """Sorted label names; numerically when every label is an integer (so '10' follows '9')."""
    unique = list(dict.fromkeys(labels))
    try:
        return sorted(unique, key=int)
    except ValueError:
        return sorted(unique)


def assign_folds(labels, num_folds: int = DEFAULT_NUM_FOLDS) -> np.ndarray:
    """Deterministic stratified folds 1..num_folds: the i-th clip of each class (file order) goes
    to fold i mod num_folds + 1, so every class is spread evenly and no RNG is involved."""
    labels = pd.Series(np.asarray(labels))
    return (labels.groupby(labels).cumcount().to_numpy() % num_folds + 1).astype(np.int64)


def from_csv(csv_path, root=None, validate_files: bool = True,
             num_folds: int = DEFAULT_NUM_FOLDS) -> pd.DataFrame:
    """A user's labeled data: a UTF-8 CSV with columns path, label[, fold] (a path may hold bytes
    that are not UTF-8, naming a file whose name is not).

    Relative paths are resolved against `root` (default: the CSV's folder). Label strings become
    contiguous ints in sorted order (category keeps the string). Without a fold column, folds
    1..num_folds are assigned by `assign_folds`.
    """
    csv_path = Path(csv_path)
    table = _read_csv(csv_path, ["path", "label"])
    base = Path(root) if root is not None else csv_path.parent
    for column in ("path", "label"):
        blank = np.flatnonzero((table[column] == "").to_numpy())
        if blank.size:
            raise DatasetError(f"{csv_path}: {blank.size} row(s) with an empty '{column}':"
                               + _listing(f"line {i + 2}" for i in blank))
    _utf8_column(table, "label", csv_path)
    order = _label_order(table["label"])
    index = {name: i for i, name in enumerate(order)}
    if "fold" in table.columns:
        folds = _int_column(table, "fold", csv_path)
        bad = np.flatnonzero(folds < 1)
        if bad.size:
            raise DatasetError(f"{csv_path}: fold values must be >= 1:"
                               + _listing(f"line {i + 2}: {folds[i]}" for i in bad))
    else:
        if num_folds < 1:
            raise DatasetError(f"num_folds must be >= 1, got {num_folds}")
        folds = assign_folds(table["label"], num_folds)
    frame = pd.DataFrame({
        "path": [str(Path(os.path.abspath(base / p))) for p in table["path"]],
        "fold": folds,
        "label": [index[name] for name in table["label"]],
        "category": table["label"].to_numpy(),
    })
    return _finish(frame, csv_path, validate_files)


def unlabeled_folder(folder) -> pd.DataFrame:
    """Every decodable audio file under `folder` (recursive, sorted; hidden files and folders
    skipped, e.g. macOS '._' files), as label -1, fold 0, category ''."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        paths += [os.path.abspath(os.path.join(dirpath, f)) for f in filenames
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS]
    if not paths:
        raise DatasetError(f"{folder}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) found")
    frame = pd.DataFrame({"path": sorted(paths), "fold": 0, "label": -1, "category": ""})
    return _finish(frame, folder, validate_files=False)


def label_fraction(df: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Keep floor(fraction * n_class) clips of each class (at least 1), drawn with
    np.random.default_rng(seed); rows keep their order and index (docs/method.md, "label fraction")."""
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise DatasetError(f"fraction must be a number in (0, 1], got {fraction!r}") from None
    if not (0.0 < fraction <= 1.0):
        raise DatasetError(f"fraction must be in (0, 1], got {fraction}")
    if df.empty:
        raise DatasetError("label_fraction: the table is empty")
    rng = np.random.default_rng(seed)
    labels = df["label"].to_numpy()
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        # 1e-9 absorbs float error such as 0.29 * 100 = 28.999999999999996.
        count = max(1, math.floor(fraction * members.size + 1e-9))
        chosen.append(rng.choice(members, size=count, replace=False))
    return df.iloc[np.sort(np.concatenate(chosen))]


def split_fold(df: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-validation split: (rows of every other fold, rows of `fold`); the index is kept."""
    folds = sorted(int(f) for f in df["fold"].unique())
    if fold not in folds:
        raise DatasetError(f"fold {fold!r} not in the data; valid folds: {folds}")
    is_test = (df["fold"] == fold).to_numpy()
    train, test = df[~is_test], df[is_test]
    if train.empty:
        raise DatasetError(f"fold {fold} leaves no training rows (the data has only fold {folds})")
    return train, test


def _class_phrase(names: list[str], singular: str, plural: str, limit: int = 10) -> str:
    """"class 'dog' has ..." or "3 classes ('dog', 'rain', 'sea') have ...", at most `limit` named."""
    if len(names) == 1:
        return f"class {names[0]!r} {singular}"
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} classes ({shown}{more}) {plural}"


def split_warnings(train: pd.DataFrame, test: pd.DataFrame, fold=None) -> list[str]:
    """Sentences warning that one fold's split is too thin to trust its accuracy (empty: none).

    Flags classes with a single training clip, classes with no training clip (the model cannot
    predict them, which caps test accuracy), classes absent from the test fold, and a test fold
    of fewer than FEW_TEST_CLIPS clips. Pass split_fold's output after any label_fraction.
    """
    names = {}
    for frame in (test, train):
        names.update(zip(frame["label"].tolist(), frame["category"].astype(str).tolist()))
    names = {label: name if name else f"label {label}" for label, name in names.items()}
    train_counts, test_counts = train["label"].value_counts(), test["label"].value_counts()
    where = f"fold {fold}" if fold is not None else "the test fold"
    warnings = []
    single = sorted(label for label, n in train_counts.items() if n == 1)
    if single:
        warnings.append(_class_phrase([names[c] for c in single], "has 1 training clip",
                                      "have 1 training clip each")
                        + (": its accuracy rests on one example" if len(single) == 1
                           else ": their accuracy rests on one example each"))
    unseen = sorted(label for label in test_counts.index if label not in train_counts.index)
    if unseen:
        total, lost = len(test), int(test_counts[unseen].sum())
        warnings.append(_class_phrase([names[c] for c in unseen], "has no training clip in this split",
                                      "have no training clip in this split")
                        + f": the model cannot predict {'it' if len(unseen) == 1 else 'them'}, so test "
                        f"accuracy is at most {100 * (total - lost) / total:.1f} % ({total - lost} of "
                        f"{total} test clips)")
    untested = sorted(label for label in train_counts.index if label not in test_counts.index)
    if untested:
        warnings.append(_class_phrase([names[c] for c in untested], f"has no clip in {where}",
                                      f"have no clip in {where}")
                        + ": this split does not measure how well the model recognises "
                        + ("it" if len(untested) == 1 else "them"))
    if len(test) == 0:
        warnings.append(f"{where} holds no test clips: no accuracy can be measured")
    elif len(test) < FEW_TEST_CLIPS:
        clips = "clip" if len(test) == 1 else "clips"
        warnings.append(f"{where} holds {len(test)} test {clips}: each is worth {100 / len(test):.0f} % "
                        "accuracy, so this fold's accuracy is mostly chance; judge the mean over folds")
    return warnings
