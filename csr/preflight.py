"""Checks that a machine can run the paper's tables, before days of GPU time depend on it.

Each check returns a `Check` (PASS, FAIL or SKIP, what was found, and on a failure what to do);
reproduce/preflight.py runs them in order, prints them and exits non-zero when one failed:

  - `tensorflow_check`: TensorFlow's version, the CUDA and cuDNN it was built with, the GPUs it
    sees (none: the step checks run on the CPU at a reduced input size, `cpu_input`);
  - `weights_check`: the backbone's initial weights load (ImageNet from Keras' cache, or a file);
  - `dataset_checks`: every data set the tables need is present and complete, or will be fetched;
  - `measure_steps` / `steps_check`: a few real training steps of each kind with the run's own
    execution options: finite losses, peak memory, seconds per step and per clip;
  - `mix_on_check`: on a GPU, mixing in the step (--mix_on=device) and in the pipeline (host) give
    the same views and losses for the same seed and step (`mix_on_differences` compares them);
  - `projection_check`: the hours each table takes here, from the measured seconds per clip and the
    runs' work (csr.costs), on the devices the chosen jobs use.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from csr import costs
from csr.spec import Phase, RunSpec

log = logging.getLogger(__name__)

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
# The ResNet50V2 input a CPU measures steps at (mel bins x frames): 1/8 of the paper's 128 x 480,
# so that a few ResNet50V2 steps take seconds on 2 cores; the times are scaled back by the area.
CPU_INPUT = (64, 120)
MIX_KEYS = ("loss", "clf_loss", "reg_loss")


@dataclass(frozen=True)
class Check:
    """One check's outcome: `detail` says what was found (or, SKIP, why nothing was), `fix` on a
    failure what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.0f} MB"


# ------------------------------------------------------------------------- TensorFlow and devices

def tensorflow_check(nvidia_gpus, tf_gpus=None, build_info=None) -> Check:
    """TensorFlow, CUDA and cuDNN versions and the GPUs TensorFlow sees, against those the driver
    lists (`nvidia_gpus`, csr.jobs.visible_gpus): a GPU the driver shows but TensorFlow does not is
    the usual broken install, and would silently train on the CPU."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info() if build_info is None else build_info
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")] if tf_gpus is None else list(tf_gpus)
    if build.get("is_cuda_build"):
        built = f"built with CUDA {build.get('cuda_version', '?')}, cuDNN {build.get('cudnn_version', '?')}"
    else:
        built = "CPU build (no CUDA, no cuDNN)"
    detail = f"TensorFlow {tf.__version__}, {built}; "
    if gpus:
        return Check("TensorFlow", PASS, detail + f"{len(gpus)} GPU(s): {', '.join(gpus)}")
    if nvidia_gpus:
        fix = ('install the CUDA build into the venv: .venv/bin/pip install -e ".[gpu]"'
               if not build.get("is_cuda_build") else
               "TensorFlow's CUDA libraries do not load: check that the driver (nvidia-smi) supports CUDA "
               f"{build.get('cuda_version', '?')}, and read why with CSR_VERBOSE=1 .venv/bin/python -c "
               "'import tensorflow as tf; print(tf.config.list_physical_devices())'")
        return Check("TensorFlow", FAIL, detail + f"nvidia-smi lists {len(nvidia_gpus)} GPU(s) but TensorFlow "
                     "sees none", fix)
    return Check("TensorFlow", PASS, detail + "no GPU visible: continuing on the CPU, the step checks at a "
                 "reduced input size")


def gpu_memory_bytes(runner=subprocess.run) -> list[int]:
    """Total memory of each GPU nvidia-smi lists (empty when it cannot say)."""
    try:
        out = runner(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                     capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [int(float(v)) * 2**20 for v in out.stdout.split() if v.strip()]


# ------------------------------------------------------------------------------------- weights

def weights_check(backbone: str, weights, image_shape) -> Check:
    """The backbone's initial weights load into it (ImageNet: fetched into Keras' cache first)."""
    from csr.model import IMAGENET_FILE, WeightsError, build_backbone

    name = "backbone weights"
    if weights is None:
        return Check(name, PASS, "random initialisation asked for (--weights=none): nothing to load")
    try:
        build_backbone(backbone, image_shape, weights)
    except WeightsError as err:
        if weights == "imagenet":
            fix = (f"copy {IMAGENET_FILE} into the folder named above, or pass --weights=PATH to a local copy; "
                   "on an offline machine `make preflight PREFLIGHT_FLAGS=--weights=none` checks the rest")
        elif not os.path.isfile(weights):
            fix = "pass --weights=PATH to an existing file, --weights=imagenet, or --weights=none"
        else:
            fix = (f"--weights must be a file saved from the {backbone} backbone (its save_weights), or Keras' "
                   f"{IMAGENET_FILE} for resnet50v2; a file saved from another backbone needs --backbone set to "
                   "that one; or use --weights=imagenet / --weights=none")
        return Check(name, FAIL, str(err).splitlines()[0], fix)  # Keras' own detail follows on many lines
    what = f"ImageNet weights ({IMAGENET_FILE}, Keras' cache)" if weights == "imagenet" else f"weights file {weights}"
    return Check(name, PASS, f"{what} loaded into {backbone} at input {tuple(image_shape)}")


# ------------------------------------------------------------------------------------- datasets

def dataset_checks(specs, places, download: bool = True) -> list[Check]:
    """One check per data set the runs need: present and complete (its clip count and size), or
    to be fetched into --data_root (its archive's size), or missing."""
    from csr import datasets
    from csr.download import DATASETS, local_state
    from csr.sources import needed_datasets

    roots = places.roots()
    given = {"esc50": places.esc50_root, "us8k": places.us8k_root}
    folders = {"esc50": roots.esc50, "us8k": roots.us8k}
    loaders = {"esc50": lambda root: datasets.esc50(root, "esc50"), "us8k": datasets.urbansound8k}
    needed = sorted(set().union(*(needed_datasets(s.target, s.unlabeled) for s in specs)))
    checks = []
    for name in needed:
        spec, folder = DATASETS[name], Path(folders[name])
        label = f"data {name}"
        flag = f"--{name}_root"
        state, problem = ("given", None) if given[name] else local_state(spec, folder)
        if state == "incomplete":  # what the download step will refuse
            checks.append(Check(label, FAIL, f"{folder} is not a complete {name}: {problem}",
                                f"remove {folder} and run `make data`, or point {flag} at a complete copy"))
        elif state in ("marked", "unmarked") or (state == "given" and (folder / spec.csv).is_file()):
            try:
                table = loaders[name](folder)
            except datasets.DatasetError as err:
                checks.append(Check(label, FAIL, str(err), f"repair {folder}, or point {flag} at another copy"))
                continue
            nbytes = sum(os.path.getsize(p) for p in table["path"])
            how = (f"given by {flag}" if given[name] else
                   "verified when unpacked" if state == "marked" else "complete")
            checks.append(Check(label, PASS, f"{folder} ({how}): {len(table)} clips, {_size(nbytes)}"))
        elif given[name]:
            checks.append(Check(label, FAIL, f"{flag}={given[name]} holds no {spec.csv}",
                                f"point {flag} at a folder in {name}'s layout ({spec.csv} and audio/)"))
        else:
            archive = Path(places.data_root) / spec.archive
            size = spec.size or spec.approx_size
            if archive.is_file():
                checks.append(Check(label, PASS, f"{folder} missing; {archive} ({_size(archive.stat().st_size)}) "
                                    "will be verified and unpacked on first use (or now: make data)"))
            elif download:
                checks.append(Check(label, PASS, f"{folder} missing: will be downloaded from {spec.url} "
                                    f"({'about ' if not spec.size else ''}{_size(size)}) on first use, or now "
                                    "with `make data`"))
            else:
                checks.append(Check(label, FAIL, f"{folder} missing and downloads are off (--nodownload)",
                                    f"run `make data`, or put {spec.archive} in {places.data_root} by hand, or "
                                    f"point {flag} at a copy"))
    return checks


# ----------------------------------------------------------------------------- training steps

def cpu_input(spec: RunSpec) -> tuple[RunSpec, float]:
    """The spec a CPU measures steps with, and the factor from its cost to the spec's own.

    ResNet50V2 is measured at CPU_INPUT (its convolutions cost in proportion to the image area, so
    the times scale back by the area ratio); the small CNN and inputs already that small as they are.
    """
    from csr.features import frames_for

    mels, frames = CPU_INPUT
    own = spec.n_mels * frames_for(spec.clip_samples, spec.hop_length)
    if spec.backbone != "resnet50v2" or own <= mels * frames:
        return spec, 1.0
    hop = spec.clip_samples // (frames - 1)
    reduced = spec.replace(n_mels=mels, hop_length=hop)
    return reduced, own / (mels * frames_for(spec.clip_samples, hop))


def image_shape(spec: RunSpec) -> tuple:
    from csr.features import frames_for

    return (spec.n_mels, frames_for(spec.clip_samples, spec.hop_length), 3)


@dataclass
class StepTimes:
    """What a few training steps of one kind measured."""

    kind: str  # "supervised", "proposed" or "eval"
    clips: int  # clips through the backbone per step
    seconds: list = field(default_factory=list)  # per timed step (the first, traced, is not timed)
    losses: list = field(default_factory=list)  # the loss after each step, the first included
    peak_bytes: int = 0
    memory: str = ""  # what peak_bytes measures

    @property
    def step_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def clip_seconds(self) -> float:
        return self.step_seconds / self.clips

    @property
    def finite(self) -> bool:
        return bool(self.losses) and all(math.isfinite(v) for v in self.losses)


def random_clips(spec: RunSpec, count: int, seed: int) -> np.ndarray:
    """Decaying tones in noise: clips the front end and the losses treat like audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(spec.clip_samples) / spec.sample_rate
    tones = np.sin(2 * np.pi * rng.uniform(100, spec.f_max / 2, (count, 1)) * t) * np.exp(-t)
    return (tones + 0.1 * rng.standard_normal((count, spec.clip_samples))).astype(np.float32)


def measure_steps(spec: RunSpec, steps: int = 3, classes: int = 10, clips=None) -> list[StepTimes]:
    """`steps` + 1 training steps of each kind and evaluation batches (the first traces and is not
    timed), built, compiled and fed the way csr.train does it, on random clips
    (or `clips`: labeled, unlabeled and test waveforms)."""
    import tensorflow as tf

    from csr import pipeline, train

    strategy = train.strategy_for(spec)
    train.seed_run(spec)
    with strategy.scope():
        model = train.build_model_for(spec, classes)
    n = steps + 1
    if clips is None:
        clips = (random_clips(spec, n * spec.labeled_batch, 1), random_clips(spec, n * spec.unlabeled_batch, 2),
                 random_clips(spec, n * spec.eval_batch, 3))
    x, u, test = clips
    y = np.arange(len(x), dtype=np.int32) % classes
    mix_on = pipeline.resolve_mix_on(spec.mix_on)
    gpus = tf.config.list_logical_devices("GPU")
    out = []
    for kind in ("supervised", "proposed"):
        with strategy.scope():
            train.compile_for(model, Phase(kind, kind, 1, 1e-5), spec.jit_compile)
        if kind == "supervised":
            data = pipeline.supervised_dataset(x, y, epoch=0, seed=spec.seed, batch_size=spec.labeled_batch)
            per_step = spec.labeled_batch
        else:
            data = pipeline.proposed_dataset(x, y, u, epoch=0, seed=spec.seed, config=spec.augment_config(),
                                             labeled_batch=spec.labeled_batch, unlabeled_batch=spec.unlabeled_batch,
                                             mix_on=mix_on)
            per_step = costs.proposed_step_clips(spec)
        times = StepTimes(kind, per_step)
        _reset_peak(gpus)
        model.fit(data, epochs=1, verbose=0, callbacks=[_clock(times)])
        times.peak_bytes, times.memory = _peak(gpus)
        out.append(times)
    times = StepTimes("eval", spec.eval_batch)
    _reset_peak(gpus)
    model.evaluate(pipeline.evaluation_dataset(test, np.zeros(len(test), np.int32), spec.eval_batch), verbose=0,
                   callbacks=[_clock(times)])
    times.peak_bytes, times.memory = _peak(gpus)
    out.append(times)
    return out


def _clock(times: StepTimes):
    """A Keras callback noting each batch's end time and loss. Reading the loss waits for the step
    to finish, so a GPU's queued work falls inside the time; the time between two batch ends
    includes fetching the batch, as in training."""
    import keras

    class Clock(keras.callbacks.Callback):
        last = None

        def on_train_batch_end(self, batch, logs=None):
            times.losses.append(float(logs["loss"]))
            now = time.perf_counter()
            if self.last is not None:
                times.seconds.append(now - self.last)
            self.last = now

        on_test_batch_end = on_train_batch_end

    return Clock()


def _reset_peak(gpus) -> None:
    import tensorflow as tf

    for gpu in gpus:
        tf.config.experimental.reset_memory_stats(gpu.name)


def _peak(gpus) -> tuple[int, str]:
    """The allocator's peak on the busiest GPU, or on a CPU the process's peak resident memory."""
    import tensorflow as tf

    if gpus:
        return max(tf.config.experimental.get_memory_info(g.name)["peak"] for g in gpus), "GPU memory peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS of this process"


def steps_check(measured: list[StepTimes], spec: RunSpec, measured_spec: RunSpec, scale: float,
                gpu_memory=()) -> Check:
    """Finite losses, seconds per step and peak memory of each kind; on a GPU, how many runs fit."""
    from csr.features import frames_for

    size = f"{measured_spec.n_mels}x{frames_for(measured_spec.clip_samples, measured_spec.hop_length)}"
    where = f"{measured_spec.backbone} at {size}"
    if scale != 1:
        where += (f" (the CPU's reduced input; the run's own {spec.n_mels}x"
                  f"{frames_for(spec.clip_samples, spec.hop_length)} costs about {scale:.1f}x as much)")
    options = ", ".join(f"{k}={getattr(spec, k)}" for k in ("strategy", "mixed_precision", "jit_compile", "mix_on"))
    lines = [f"{where}; {spec.labeled_batch} labeled + {spec.unlabeled_batch} unlabeled; {options}"]
    for t in measured:
        lines.append(f"{t.kind:<10} {t.clips:>3} clips/step  {1e3 * t.step_seconds:8.0f} ms/step "
                     f"(median of {len(t.seconds)})  losses {', '.join(f'{v:.3g}' for v in t.losses)}  "
                     f"{t.memory} {_size(t.peak_bytes)}")
    bad = [t.kind for t in measured if not t.finite]
    if bad:
        return Check("training steps", FAIL, "\n".join(lines), f"non-finite loss in the {', '.join(bad)} step(s): "
                     "without --mixed_precision, check the data; with it, rerun without it to see whether "
                     "float16 overflows")
    peak = max(t.peak_bytes for t in measured)
    if gpu_memory and measured[0].memory.startswith("GPU"):
        fits = max(1, int(0.9 * min(gpu_memory) // max(peak, 1)))
        lines.append(f"by memory, {fits} run(s) fit on one GPU ({_size(min(gpu_memory))}): "
                     f"--runs_per_gpu={fits} at most")
    return Check("training steps", PASS, "\n".join(lines))


# ------------------------------------------------------------------------- mix_on=device vs host

def mix_on_outcomes(spec: RunSpec, classes: int = 10) -> dict:
    """Views and one proposed step's losses with the mixing in the pipeline ("host") and in the
    step ("device"), from the same seed, step and initial weights, on this machine's first device."""
    import tensorflow as tf

    from csr import pipeline, train

    spec = spec.replace(strategy="default")
    train.seed_run(spec)
    model = train.build_model_for(spec, classes)
    initial = model.get_weights()
    x = random_clips(spec, spec.labeled_batch, 1)
    y = np.arange(len(x), dtype=np.int32) % classes
    u = random_clips(spec, spec.unlabeled_batch, 2)
    out = {}
    for where in ("host", "device"):
        batch = next(iter(pipeline.proposed_dataset(
            x, y, u, epoch=0, seed=spec.seed, config=spec.augment_config(), labeled_batch=spec.labeled_batch,
            unlabeled_batch=spec.unlabeled_batch, mix_on=where)))
        if where == "device":
            views = tf.function(model.mix_on_device)(batch)  # what the step computes from the raw clips
        else:
            views = batch
        model.set_weights(initial)
        train.compile_for(model, Phase("joint", "proposed", 1, spec.joint_lr), spec.jit_compile)
        logs = model.train_on_batch(batch, return_dict=True)
        out[where] = {"views": {k: np.asarray(views[k]) for k in ("s1", "s1_aug", "s2", "s2_aug")},
                      "losses": {k: float(logs[k]) for k in MIX_KEYS}}
    return out


def mix_on_differences(host: dict, device: dict, view_tolerance: float = 1e-4,
                       loss_tolerance: float = 1e-3) -> list[str]:
    """What differs between the two outcomes of mix_on_outcomes: each view whose largest difference
    exceeds `view_tolerance` of its peak, each loss off by more than `loss_tolerance` relative."""
    found = []
    for key, a in host["views"].items():
        b = device["views"][key]
        if a.shape != b.shape:
            found.append(f"view {key}: shape {a.shape} on the host, {b.shape} on the device")
            continue
        worst = float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-12)
        if not worst <= view_tolerance:
            found.append(f"view {key}: differs by {worst:.2g} of its peak (tolerance {view_tolerance:g})")
    for key, a in host["losses"].items():
        b = device["losses"][key]
        if not abs(a - b) <= loss_tolerance * max(abs(a), 1e-12):
            found.append(f"{key}: {a:.6g} on the host, {b:.6g} on the device")
    return found


def mix_on_check(spec: RunSpec, on_gpu: bool) -> Check:
    name = "mix_on device = host"
    if not on_gpu:
        return Check(name, SKIP, "no GPU: --mix_on=auto mixes on the host here, so there is nothing to compare "
                     "(tests/test_distribute.py compares both on the CPU)")
    outcomes = mix_on_outcomes(spec)
    tolerance = 2e-2 if spec.mixed_precision else 1e-3
    differences = mix_on_differences(outcomes["host"], outcomes["device"], loss_tolerance=tolerance)
    losses = ", ".join(f"{k} {outcomes['device']['losses'][k]:.5g}" for k in MIX_KEYS)
    if differences:
        return Check(name, FAIL, "; ".join(differences), "train with --mix_on=host (the same batches, mixed by "
                     "the CPU) and report this output")
    return Check(name, PASS, f"same views and losses from the same seed and step ({losses})")


# ----------------------------------------------------------------------------------- projection

def projection_check(tables, profile, measured: list[StepTimes], scale: float, devices: int,
                     jobs_note: str) -> Check:
    """Hours of each table on this machine: every run's clips (csr.costs) at the measured seconds
    per clip (times `scale` when measured at a reduced input), run in order on `devices` devices."""
    per_clip = {t.kind: t.clip_seconds * scale for t in measured}
    rows = costs.table_costs(tables, profile, per_clip)
    lines = ["seconds per clip " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in per_clip.items())
             + (f" (measured x {scale:.1f}, the input area ratio)" if scale != 1 else "")]
    for r in rows:
        wall = costs.makespan(r["run_costs"], devices)
        lines.append(f"make {r['table']:<12} {r['runs']:>3} runs: {r['total'] / 3600:8.1f} h of device time, "
                     f"{wall / 3600:8.1f} h on {devices} device(s); the {r['new_runs']} run(s) no earlier table "
                     f"needs: {costs.makespan(r['new_run_costs'], devices) / 3600:.1f} h")
    every = [c for r in rows for c in r["new_run_costs"]]
    lines.append(f"all {len(rows)} table(s): {len(every)} runs, {costs.makespan(every, devices) / 3600:.1f} h "
                 f"({jobs_note}; evaluation included, checkpoints and the first epoch's tracing not)")
    return Check("projected hours", PASS, "\n".join(lines))
