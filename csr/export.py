"""A trained model as a deployable export: SavedModels with waveform and audio-file signatures, TFLite.

    EXPORT_DIR/
        metadata.json          class names, sample rate, clip length, the run's config and result
        saved_model/           TensorFlow only. serving_default: float32 waveforms (batch, clip_samples)
                               -> probabilities, class_ids, class_names, embedding, logits; metadata
        saved_model_audio/     the same signatures, plus classify_audio and classify_audio_windows:
                               a batch of encoded files (WAV, FLAC, Ogg Vorbis, MP3) -> the same
                               outputs. Loading it needs tensorflow-io's op library first (TFIO_OPS:
                               `import tensorflow_io` alone defers loading it).
        model.tflite           waveform -> probabilities, embedding, logits (float32, builtin ops only)
        model_dynamic.tflite   the same, dynamic-range quantised (quantize="dynamic")

Why two SavedModels: TensorFlow imports every function of a SavedModel when it loads one, so a
SavedModel holding tensorflow-io's decoder ops cannot be loaded at all, not even for its waveform
signature, by a process without tensorflow-io (stock TensorFlow Serving among them). Both hold the
same weights; when their variable files are byte-identical the second is a hard link to the first.

The audio signatures reproduce `csr.audio.load_audio` in the graph (csr.audio_graph: decode, mean
of the channels, resample to the model's rate as training did, RMS-normalise, fit to the clip
length; docs/deploy.md gives the measured difference); classify_audio_windows cuts a file into
clip-length windows as `csr-predict --windows` does and averages the probabilities and embeddings
over them. A file that cannot be used fails the request with an InvalidArgumentError naming the
item and the problem.

The front end is traced on its whole-batch path (chunk_size=0): plain graph ops, no XLA cluster, so
the export runs on stock TensorFlow Serving and converts to TFLite builtins (tf.signal.rfft becomes
TFLite's RFFT2D).
"""

from __future__ import annotations

import contextlib
import datetime
import filecmp
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from csr.audio_graph import decode_audio, to_clips
from csr.config import EXPORT_FORMATS as FORMATS
from csr.config import EXPORT_QUANTIZE as QUANTIZE
from csr.errors import UserError
from csr.runio import atomic_write, atomic_write_json, read_json

# What a consumer runs before tf.saved_model.load(saved_model_audio): `import tensorflow_io` only
# registers file systems; its op library (the decoders, the resampler) loads on first attribute use.
TFIO_OPS = "import tensorflow_io as tfio; tfio.python.ops.core_ops.io_audio_resample"
EXPORT_FORMAT = "csr-export"
EXPORT_FORMAT_VERSION = 1
METADATA = "metadata.json"
SAVED_MODEL = "saved_model"
SAVED_MODEL_AUDIO = "saved_model_audio"
TFLITE = "model.tflite"
TFLITE_DYNAMIC = "model_dynamic.tflite"
BACKENDS = ("auto", "saved_model", "tflite", "tflite_dynamic")



class ExportError(UserError, ValueError):
    """An export that cannot be made or read; the message names the folder and the problem."""


# ------------------------------------------------------------------------------------------------
# The served module


@contextlib.contextmanager
def whole_batch_front_end(model, runtime_filterbank: bool = False):
    """Trace the log-mel front end on its plain whole-batch path (chunk_size=0) inside the block.

    The CPU default runs the front end in chunks under an XLA-compiled loop; an export wants plain
    graph ops (TensorFlow Serving builds without XLA, TFLite has no XLA). The numbers are the same.
    runtime_filterbank: make the mel filterbank a run-time value (times 1), which keeps TFLite's
    dynamic-range quantiser from turning it into int8 (see LogMelSpectrogram._runtime_filterbank).
    """
    from csr.features import LogMelSpectrogram
    from csr.model import layers_of

    layers = layers_of(model, LogMelSpectrogram)
    before = [(layer.chunk_size, layer._runtime_filterbank) for layer in layers]
    for layer in layers:
        layer.chunk_size, layer._runtime_filterbank = 0, bool(runtime_filterbank)
    try:
        yield
    finally:
        for layer, (chunk, runtime) in zip(layers, before):
            layer.chunk_size, layer._runtime_filterbank = chunk, runtime


class ServingModule(tf.Module):
    """The exported tf.Module: the Keras model's weights, serving_default and metadata.

    signatures(audio=False): serving_default and metadata (TensorFlow ops only); audio=True adds
    classify_audio and classify_audio_windows (tensorflow-io ops). Those two are signatures only,
    not attributes, so the module saves the same objects (and byte-identical variable files) either
    way. Trace inside whole_batch_front_end(model) so the export takes the plain front-end path.
    """

    def __init__(self, model, class_names, metadata_json: str):
        super().__init__(name="csr_export")
        # The weights only: tracking the Keras model itself would also save every Keras sub-model's
        # own traced functions (each with the front end's constants), several times the graph.
        self.model_weights = list(model.weights)
        self._model = lambda: model  # a plain function: not tracked, not saved
        self._sample_rate = int(model.build_kwargs["sample_rate"])
        self._clip = clip = int(model.build_kwargs["clip_samples"])
        names, meta = list(class_names), str(metadata_json)
        sample_rate = self._sample_rate

        @tf.function(input_signature=[tf.TensorSpec([None, clip], tf.float32, name="waveform")], autograph=False)
        def serve_waveform(waveform):
            embedding, logits = self._forward(waveform)
            return {**self._outputs(tf.nn.softmax(logits), embedding, names), "logits": logits}

        @tf.function(input_signature=[], autograph=False)
        def metadata():
            return {"metadata_json": tf.constant(meta), "class_names": tf.constant(names, tf.string),
                    "sample_rate": tf.constant(sample_rate, tf.int64), "clip_samples": tf.constant(clip, tf.int64)}

        self.serve_waveform = serve_waveform
        self.metadata = metadata
        self._class_names = lambda: names  # a plain function: not tracked, not saved

    def _forward(self, waves):
        return self._model().embed_and_classify(waves)

    @staticmethod
    def _outputs(probabilities, embedding, names):
        ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "class_ids": ids,
                "class_names": tf.gather(tf.constant(names, tf.string), ids), "embedding": embedding}

    def _classify(self, audio, windows: bool, signature: str):
        """Encoded files -> every file's clips in one batch -> the model -> mean over each file's clips."""
        clip, count = self._clip, tf.shape(audio)[0]

        def body(i, clips, counts):
            label = tf.strings.format(signature + ": item {}", i)
            c = to_clips(*decode_audio(audio[i], label), self._sample_rate, clip, windows)
            return i + 1, clips.write(i, c), counts.write(i, tf.cast(tf.shape(c)[0], tf.int32))

        clips = tf.TensorArray(tf.float32, size=count, infer_shape=False, element_shape=[None, clip])
        counts = tf.TensorArray(tf.int32, size=count)
        _, clips, counts = tf.while_loop(lambda i, *_: i < count, body, (0, clips, counts))
        counts = counts.stack()
        waves = tf.cond(count > 0, clips.concat, lambda: tf.zeros([0, clip], tf.float32))
        embedding, logits = self._forward(waves)
        item = tf.repeat(tf.range(count), counts)
        probabilities = tf.math.unsorted_segment_mean(tf.nn.softmax(logits), item, count)
        embedding = tf.math.unsorted_segment_mean(embedding, item, count)
        return {**self._outputs(probabilities, embedding, self._class_names()), "windows": counts}

    def _unavailable(self, audio, signature: str):
        """The TensorFlow-only SavedModel's stand-in for an audio signature: a clear error."""
        count, dim = tf.shape(audio)[0], self._model().embedding_dim
        check = tf.debugging.Assert(count < 0, [f"{signature}: this SavedModel ({SAVED_MODEL}/) decodes no audio; "
                                                f"load {SAVED_MODEL_AUDIO}/ after `import tensorflow_io` and "
                                                f"`{TFIO_OPS.split('; ')[1]}`"])
        with tf.control_dependencies([check]):
            probabilities = tf.zeros(tf.stack([count, len(self._class_names())]), tf.float32)
            return {**self._outputs(probabilities, tf.zeros(tf.stack([count, dim])), self._class_names()),
                    "windows": tf.zeros([count], tf.int32)}

    def signatures(self, audio: bool = False) -> dict:
        """{signature key: concrete function} for tf.saved_model.save.

        Both variants have the same four keys (the TensorFlow-only one answers the audio ones with
        an error), so the two SavedModels save the same objects and their variable files are
        byte-identical, which lets export_model hard-link them.
        """
        out = {"serving_default": self.serve_waveform.get_concrete_function(),
               "metadata": self.metadata.get_concrete_function()}
        spec = tf.TensorSpec([None], tf.string, name="audio")
        for key, windows in (("classify_audio", False), ("classify_audio_windows", True)):
            if audio:
                body = lambda audio, w=windows, k=key: self._classify(audio, w, k)  # noqa: E731
            else:
                body = lambda audio, k=key: self._unavailable(audio, k)  # noqa: E731
            out[key] = tf.function(body, input_signature=[spec], autograph=False).get_concrete_function()
        return out


def tflite_model(model, quantize: str = "none") -> bytes:
    """The waveform -> {probabilities, embedding, logits} model as a TFLite flatbuffer (builtin ops).

    The variables are folded into constants first (convert_variables_to_constants_v2): TF 2.16's
    converter cannot freeze Keras 3 variables itself ("missing attribute 'value'", then an abort).
    quantize="dynamic": int8 weights, float activations (dynamic-range quantisation) for the
    backbone and heads; the front end's mel filterbank stays float32.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    if quantize not in QUANTIZE:
        raise ExportError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    clip = int(model.build_kwargs["clip_samples"])
    spec = tf.TensorSpec([None, clip], tf.float32, name="waveform")

    @tf.function(input_signature=[spec], autograph=False)
    def forward(waveform):
        embedding, logits = model.embed_and_classify(waveform)
        return {"embedding": embedding, "logits": logits, "probabilities": tf.nn.softmax(logits)}

    with whole_batch_front_end(model, runtime_filterbank=quantize == "dynamic"):
        traced = forward.get_concrete_function()
    frozen = convert_variables_to_constants_v2(traced)
    holder = tf.Module()

    @tf.function(input_signature=[spec], autograph=False)
    def serving_default(waveform):  # gives the frozen graph's outputs their names back
        return tf.nest.pack_sequence_as(traced.structured_outputs, list(tf.nest.flatten(frozen(waveform))))

    holder.serving_default = serving_default
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving_default.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return converter.convert()
    except Exception as err:  # noqa: BLE001 - the converter's errors name the op; keep them
        raise ExportError(f"TFLite conversion failed: {err}") from err


# ------------------------------------------------------------------------------------------------
# Writing an export


@dataclass
class ExportResult:
    out_dir: Path
    files: dict = field(default_factory=dict)  # name -> bytes on disk (each folder counted whole)
    metadata: dict = field(default_factory=dict)
    linked: bool = False  # saved_model_audio's variable files are hard links to saved_model's


def _versions() -> dict:
    import keras

    import csr

    out = {"csr": csr.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        import tensorflow_io

        out["tensorflow_io"] = tensorflow_io.__version__
    except ImportError:  # pragma: no cover - an install requirement
        out["tensorflow_io"] = None
    return out


def build_metadata(model, class_names, formats, quantize, source=None, run_config=None, run_result=None) -> dict:
    """metadata.json: what a consumer needs besides the model files."""
    kwargs = {k: v for k, v in model.build_kwargs.items()}
    sample_rate, clip = int(kwargs["sample_rate"]), int(kwargs["clip_samples"])
    files = {}
    if "saved_model" in formats:
        files.update(saved_model=SAVED_MODEL, saved_model_audio=SAVED_MODEL_AUDIO)
    if "tflite" in formats:
        files["tflite"] = TFLITE
        if quantize == "dynamic":
            files["tflite_dynamic"] = TFLITE_DYNAMIC
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "class_names": list(class_names), "num_classes": len(class_names),
        "sample_rate": sample_rate, "clip_samples": clip, "clip_seconds": clip / sample_rate,
        "embedding_dim": model.embedding_dim, "backbone": kwargs.get("backbone"),
        "build_kwargs": kwargs,
        "input": ("float32 waveforms (batch, clip_samples): mono (mean of the channels) at sample_rate, "
                  "divided by their RMS over the whole file, zero-padded or cropped at the end "
                  "(csr.audio.load_audio)"),
        "files": files,
        "signatures": {
            "serving_default": "waveform (batch, clip_samples) float32 -> probabilities, class_ids, "
                               "class_names, embedding, logits",
            "classify_audio": "audio (batch,) encoded WAV/FLAC/Ogg Vorbis/MP3 bytes -> probabilities, "
                              f"class_ids, class_names, embedding, windows (saved_model_audio; run `{TFIO_OPS}` "
                              "before loading it)",
            "classify_audio_windows": "as classify_audio, averaged over clip-length windows covering "
                                      "each file (csr.predict --windows)",
            "metadata": "-> metadata_json, class_names, sample_rate, clip_samples",
        },
        "source": dict(source or {}), "run_config": run_config, "run_result": run_result,
    }


def dir_bytes(path: Path) -> int:
    """Bytes a file or folder holds on disk, each hard-linked file once."""
    if path.is_file():
        return path.stat().st_size
    seen, total = set(), 0
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            if (st.st_dev, st.st_ino) not in seen:  # hard links once
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _link_identical_variables(first: Path, second: Path) -> bool:
    """Make second's variable files hard links to first's where they are byte-identical."""
    linked = False
    for f in sorted((first / "variables").glob("*")):
        other = second / "variables" / f.name
        if other.is_file() and filecmp.cmp(f, other, shallow=False):
            tmp = other.with_name(other.name + ".link")
            try:
                os.link(f, tmp)
            except OSError:
                return linked
            os.replace(tmp, other)
            linked = True
    return linked


def _check_out_dir(out_dir, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: folder exists and is not empty (pass --overwrite to replace it)")
    return out


def check_options(formats, quantize) -> tuple[str, ...]:
    """The formats to write, in order without repeats, once they and `quantize` are known to fit."""
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ExportError(f"--format: unknown format {', '.join(map(repr, bad)) or 'none given'}; choose from "
                          f"{', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ExportError(f"--quantize: unknown quantisation {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if quantize != "none" and "tflite" not in formats:
        raise ExportError(f"--quantize={quantize} applies to the TFLite model; add --format=tflite")
    return formats


def export_model(model, class_names, out_dir, *, formats=FORMATS, quantize="none", overwrite=False,
                 source=None, run_config=None, run_result=None) -> ExportResult:
    """Write the export of a built CSRModel (weights loaded) to out_dir, atomically.

    The export is assembled in a hidden sibling folder and renamed into place, so out_dir is either
    the old export or the complete new one. An existing out_dir is replaced only with overwrite.
    """
    formats = check_options(formats, quantize)
    names = [str(n) for n in class_names]
    if len(names) != int(model.build_kwargs["num_classes"]):
        raise ExportError(f"{len(names)} class names for a model with {model.build_kwargs['num_classes']} classes")
    out = _check_out_dir(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = build_metadata(model, names, formats, quantize, source, run_config, run_result)
    linked = False
    # Staged beside out_dir under fixed names, as csr.download stages an archive: a leftover of a
    # killed export is removed by the next one, not left to accumulate.
    tmp, trash = out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.old")
    for leftover in (tmp, trash):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir()
    try:
        atomic_write_json(tmp / METADATA, meta)
        text = (tmp / METADATA).read_text()
        if "saved_model" in formats:
            with whole_batch_front_end(model):
                module = ServingModule(model, names, text)
                module.metadata_file = tf.saved_model.Asset(str(tmp / METADATA))
                for folder, audio in ((SAVED_MODEL, False), (SAVED_MODEL_AUDIO, True)):
                    tf.saved_model.save(module, str(tmp / folder), signatures=module.signatures(audio))
            linked = _link_identical_variables(tmp / SAVED_MODEL, tmp / SAVED_MODEL_AUDIO)
        if "tflite" in formats:
            for name, mode in ((TFLITE, "none"), (TFLITE_DYNAMIC, "dynamic")):
                if mode == "none" or quantize == mode:
                    with atomic_write(tmp / name, "wb") as fh:
                        fh.write(tflite_model(model, mode))
        if out.exists():
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {name: dir_bytes(out / name) for name in [METADATA, *meta["files"].values()]}
    return ExportResult(out, files, meta, linked)


def _run_metadata(run_dir: Path) -> tuple[dict | None, dict | None]:
    """The run's config.json and result.json as written, when present and readable."""
    from csr import rundir

    found = []
    for name in (rundir.CONFIG, rundir.RESULT):
        try:
            found.append(read_json(run_dir / name) if (run_dir / name).is_file() else None)
        except (OSError, ValueError):
            found.append(None)
    return found[0], found[1]


def export_run(run_dir, out_dir, *, formats=FORMATS, quantize="none", overwrite=False) -> ExportResult:
    """Export a run directory: its model and weights as csr.predict.load_run finds them."""
    from csr.predict import PredictError, load_run

    run_dir = Path(run_dir)
    if is_export_dir(run_dir):
        raise ExportError(f"{run_dir} is a csr-export folder, not a run; pass the run folder it was exported "
                          "from (its metadata.json names it under source.run_dir)")
    check_options(formats, quantize)  # these two before the minutes a large model takes to load
    _check_out_dir(out_dir, overwrite)
    try:
        model, names, info = load_run(run_dir)
    except PredictError as err:
        raise ExportError(str(err)) from err
    config, result = _run_metadata(run_dir)
    source = {k: info.get(k) for k in ("run_dir", "weights", "finished", "epoch", "phase", "named", "note")}
    return export_model(model, names, out_dir, formats=formats, quantize=quantize, overwrite=overwrite,
                        source=source, run_config=config, run_result=result)


# ------------------------------------------------------------------------------------------------
# Reading an export


def is_export_dir(path) -> bool:
    """Whether `path` is a folder holding a csr export (its metadata.json)."""
    path = Path(path) / METADATA
    if not path.is_file():
        return False
    try:
        return read_json(path).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class ExportedModel:
    """A loaded csr export: the model's input contract and its forward pass, without csr.model.

    sample_rate, clip_samples, class_names, num_classes, embedding_dim, metadata; build_kwargs
    (num_classes, sample_rate, clip_samples, ... as CSRModel.build_kwargs) and info (as
    csr.predict.load_run's) let csr.predict use it in place of a run's model.
    """

    def __init__(self, path, backend: str = "auto", num_threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ExportError(f"{self.path}: export folder not found")
        if not is_export_dir(self.path):
            raise ExportError(f"{self.path}: not a csr export (no {METADATA} of format {EXPORT_FORMAT!r})")
        meta = read_json(self.path / METADATA)
        if int(meta.get("format_version", 0)) > EXPORT_FORMAT_VERSION:
            raise ExportError(f"{self.path}: export format {meta['format_version']} is newer than this csr "
                              f"reads ({EXPORT_FORMAT_VERSION})")
        self.metadata = meta
        self.sample_rate = int(meta["sample_rate"])
        self.clip_samples = int(meta["clip_samples"])
        self.class_names = list(meta["class_names"])
        self.num_classes = len(self.class_names)
        self.embedding_dim = int(meta["embedding_dim"])
        self.build_kwargs = {**meta.get("build_kwargs", {}), "num_classes": self.num_classes,
                             "sample_rate": self.sample_rate, "clip_samples": self.clip_samples}
        if backend not in BACKENDS:
            raise ExportError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "auto":
            backend = "saved_model" if (self.path / SAVED_MODEL).is_dir() else "tflite"
        files = {"saved_model": SAVED_MODEL, "tflite": TFLITE, "tflite_dynamic": TFLITE_DYNAMIC}
        if not (self.path / files[backend]).exists():
            raise ExportError(f"{self.path}: the export has no {files[backend]} (made without that format?)")
        self.backend = backend
        self._audio = None
        if backend == "saved_model":
            self._saved = tf.saved_model.load(str(self.path / SAVED_MODEL))
            self._signature = self._saved.signatures["serving_default"]
        else:
            self._interpreter = tf.lite.Interpreter(model_path=str(self.path / files[backend]),
                                                    num_threads=num_threads)
            self._runner = self._interpreter.get_signature_runner("serving_default")
        source = meta.get("source") or {}
        self.info = {"run_dir": str(self.path), "export_dir": str(self.path),
                     "weights": str(self.path / files[backend]), "finished": source.get("finished", True),
                     "epoch": source.get("epoch"), "phase": source.get("phase"),
                     "sample_rate": self.sample_rate, "clip_samples": self.clip_samples, "named": True,
                     "note": None}

    def _outputs(self, waves) -> dict:
        waves = np.asarray(waves, dtype=np.float32)
        if waves.ndim != 2 or waves.shape[1] != self.clip_samples:
            raise ValueError(f"expected waveforms of shape (batch, {self.clip_samples}), got {waves.shape}")
        if self.backend == "saved_model":
            return {k: v.numpy() for k, v in self._signature(waveform=tf.constant(waves)).items()}
        if len(waves) == 0:
            return {"embedding": np.zeros((0, self.embedding_dim), np.float32),
                    "logits": np.zeros((0, self.num_classes), np.float32),
                    "probabilities": np.zeros((0, self.num_classes), np.float32)}
        return self._runner(waveform=waves)

    def forward(self, waves):
        """(embeddings (batch, D), logits (batch, classes)) as float32 arrays."""
        out = self._outputs(waves)
        return out["embedding"], out["logits"]

    def __call__(self, waves):
        """(embeddings (batch, D), probabilities (batch, classes)) as float32 arrays."""
        out = self._outputs(waves)
        return out["embedding"], out["probabilities"]

    def classify_audio(self, blobs, windows: bool = False) -> dict:
        """Encoded files (a list of bytes) through the export's classify_audio(_windows) signature.

        Loads saved_model_audio on first use, which loads tensorflow-io's op library (TFIO_OPS).
        """
        if self._audio is None:
            import tensorflow_io as tfio

            tfio.python.ops.core_ops.io_audio_resample  # noqa: B018 - loads the op library (import defers it)

            folder = self.path / SAVED_MODEL_AUDIO
            if not folder.is_dir():
                raise ExportError(f"{self.path}: the export has no {SAVED_MODEL_AUDIO}")
            self._audio = tf.saved_model.load(str(folder))
        name = "classify_audio_windows" if windows else "classify_audio"
        out = self._audio.signatures[name](audio=tf.constant(list(blobs), tf.string))
        return {k: v.numpy() for k, v in out.items()}


def load_export(path, backend: str = "auto", num_threads: int | None = None) -> ExportedModel:
    """Load an export folder (see ExportedModel); backend: auto (the SavedModel when present),
    saved_model, tflite or tflite_dynamic; num_threads: the TFLite interpreter's (default: its own)."""
    return ExportedModel(path, backend, num_threads)
