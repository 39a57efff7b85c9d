"""Benchmark of the training step: its cost against the bare backbone, and what the tables cost.

    python reproduce/bench_step.py [--backbones=small,resnet50v2] [--rounds=3]

Measured side by side in one run, for each backbone at its input size (the small CNN at the
paper's 128 x 480, ResNet50V2 at a reduced 64 x 120 so that a CPU finishes):
  1. the supervised train_step (8 clips), the proposed train_step with two backbone passes (the
     paper's Algorithm 1: 8 + 4 x 20 = 88 clips) and with one (--single_pass: 80 clips), each a
     tf.function over raw waveforms: log-mel front end, backbone, heads, losses, Adam update;
  2. the bare backbone forward + backward (gradients of a scalar of its output, no optimizer) on
     precomputed images of the same number of clips.
Calls are interleaved round by round and the median is kept, so a shared machine slows all of
them alike. Prints ms per step, the ratio step / bare backbone (target <= 1.10), the front end's
share, and each step's peak memory (GPU allocator peak, or on a CPU the peak RSS of a fresh
process running only that step, and its growth over the built model).

Then, at the paper's full input size with ResNet50V2, FLOPs per step counted by TensorFlow's
profiler on each step's graph, and the projected GPU-hours of every table of the paper from the
number of runs, epochs and clips each needs (csr.experiments, paper profile), at a stated
sustained throughput (--gpu_tflops x --gpu_utilization).
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from csr import config as C
from csr.cli import run_script
from csr.runio import atomic_write_json

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", ["small", "resnet50v2"], "Backbones to time.")
flags.DEFINE_string("small_input", "128x480", "Input (mel bins x frames) of the small CNN.")
flags.DEFINE_string("resnet_input", "64x120",
                    "Input of ResNet50V2 (the paper's is 128x480; reduced for CPUs).")
flags.DEFINE_integer("labeled_batch", C.LABELED_BATCH, "Labeled clips per step.")
flags.DEFINE_integer("unlabeled_batch", C.UNLABELED_BATCH, "Unlabeled clips per step.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds; each times every variant `steps` times.")
flags.DEFINE_integer("steps", 1, "Timed calls per variant and round.")
flags.DEFINE_bool("mixed_precision", False, "Time under the mixed_float16 policy.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile every timed function.")
flags.DEFINE_bool("memory", True, "Measure each step's peak memory.")
flags.DEFINE_bool("projection", True, "Count FLOPs at full size and project the tables' GPU-hours.")
flags.DEFINE_float("gpu_tflops", 100.0, "Assumed dense mixed-precision throughput of one GPU, TFLOP/s.")
flags.DEFINE_float("gpu_utilization", 0.4, "Assumed fraction of --gpu_tflops a training step sustains.")
flags.DEFINE_string("json_out", None, "Also write every number to this JSON file.")
flags.DEFINE_string("worker", None, "Internal: 'backbone:variant' - measure one step's memory and exit.")

VARIANTS = ("supervised", "proposed", "single_pass")
TARGET_RATIO = 1.10


# ------------------------------------------------------------------------------------ set-up

def input_kwargs(size: str) -> dict:
    """build_model arguments for an 'HxW' backbone input from 5 s clips: n_mels=H, hop for W frames."""
    from csr.features import frames_for

    try:
        mels, frames = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise app.UsageError(f"input size {size!r}: expected MELSxFRAMES, e.g. 128x480") from None
    hop = C.CLIP_SAMPLES // (frames - 1)
    if frames < 2 or frames_for(C.CLIP_SAMPLES, hop) != frames:
        raise app.UsageError(f"input size {size!r}: no hop length gives {frames} frames for 5 s clips")
    return {"n_mels": mels, "hop_length": hop}


def sizes_for(backbone: str) -> str:
    return FLAGS.resnet_input if backbone == "resnet50v2" else FLAGS.small_input


def make_batches(labeled: int, unlabeled: int, seed: int = 0):
    """(supervised (x, y), proposed dict) of decaying tones over noise, mixed by batch_split_mix."""
    import tensorflow as tf

    from csr.augment import AugmentConfig, mixed_views

    rng = np.random.default_rng(seed)
    t = np.arange(C.CLIP_SAMPLES) / C.SAMPLE_RATE
    clips = np.sin(2 * np.pi * rng.uniform(100, 4000, (labeled + unlabeled, 1)) * t) * np.exp(-t)
    clips = (clips + 0.1 * rng.standard_normal(clips.shape)).astype(np.float32)
    x, u = clips[:labeled], clips[labeled:]
    y = (np.arange(labeled) % 10).astype(np.int32)
    proposed = mixed_views(tf.constant(x), tf.constant(y), tf.constant(u), AugmentConfig(), seed)
    return (tf.constant(x), tf.constant(y)), proposed


def build(backbone: str, size: str):
    """A compiled CSRModel for `backbone` at `size` (random init: timing does not need weights)."""
    import keras

    from csr.model import build_model

    previous = keras.config.dtype_policy()
    if FLAGS.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model(10, backbone=backbone, weights=None, seed=0, **input_kwargs(size))
    finally:
        keras.config.set_dtype_policy(previous)
    model.compile(optimizer=keras.optimizers.Adam(1e-6))
    return model


def step_functions(model, supervised_batch, proposed_batch, names=None) -> dict:
    """name -> (callable returning a tensor to wait on, clips through the backbone).

    Names: the VARIANTS (train steps), "bare_<variant>" (backbone forward + backward on as many
    clips) and "front_end"; `names` restricts which are traced (all by default).
    """
    import tensorflow as tf

    wanted = lambda name: names is None or name in names  # noqa: E731
    jit = FLAGS.jit_compile
    n_l = int(proposed_batch["x"].shape[0])
    n_views = 4 * int(proposed_batch["s1"].shape[0])
    clips = {"supervised": n_l, "proposed": n_l + n_views, "single_pass": n_views}
    fns = {}
    for name, mode, single in (("supervised", "supervised", False), ("proposed", "proposed", False),
                               ("single_pass", "proposed", True)):
        if not wanted(name):
            continue
        model.configure(mode=mode, single_pass=single)  # baked into the trace below
        batch = supervised_batch if mode == "supervised" else proposed_batch
        spec = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), batch)
        step = tf.autograph.experimental.do_not_convert(model.train_step)  # as Keras' fit does
        concrete = tf.function(step, jit_compile=jit).get_concrete_function(spec)
        fns[name] = (lambda c=concrete, b=batch: c(b)["loss"], clips[name])

    views = [proposed_batch[k] for k in ("s1", "s1_aug", "s2", "s2_aug")]
    all_waves = tf.concat([proposed_batch["x"]] + views, 0)
    if wanted("front_end"):
        frontend = tf.function(lambda w: model.frontend(w, training=False), jit_compile=jit)
        fns["front_end"] = (lambda: frontend(all_waves), int(all_waves.shape[0]))
    variables = model.backbone.trainable_variables

    @tf.function(jit_compile=jit)
    def bare(image):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.cast(model.backbone(image, training=True), tf.float32))
        return loss, tape.gradient(loss, variables)

    for name in VARIANTS:
        if wanted(f"bare_{name}"):
            image = model.frontend(all_waves[:clips[name]], training=False)
            fns[f"bare_{name}"] = (lambda im=image: bare(im)[0], clips[name])
    return fns


def time_interleaved(fns: dict, rounds: int, steps: int) -> dict:
    """Median seconds per call of each function, calls interleaved round by round."""
    for fn, _ in fns.values():
        np.asarray(fn())  # trace / compile and warm up outside the timing
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, _) in fns.items():
            for _ in range(steps):
                start = time.perf_counter()
                np.asarray(fn())  # waits for the result (GPU kernels are asynchronous)
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


# ------------------------------------------------------------------------------------ memory

def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB.

    Linux's VmHWM belongs to the process image, so a worker started by exec begins afresh; the
    getrusage high-water mark (the fallback elsewhere) would carry over the parent's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_worker(spec: str) -> dict:
    """In a fresh process: peak RSS after building, and after two calls of one step variant."""
    backbone, variant = spec.split(":")
    sup, prop = make_batches(FLAGS.labeled_batch, FLAGS.unlabeled_batch)
    model = build(backbone, sizes_for(backbone))
    fn = step_functions(model, sup, prop, names=[variant])[variant][0]
    built = peak_rss_mb()  # the built model, its optimizer state, the batch and the traced step
    for _ in range(2):
        np.asarray(fn())
    return {"built_mb": built, "peak_mb": peak_rss_mb()}


def memory(backbone: str, variant: str, fns=None) -> dict:
    """Peak memory of one step variant: the GPU allocator's peak, or a fresh process's peak RSS."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")
        np.asarray(fns[variant][0]())
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        return {"peak_mb": peak / 2**20, "kind": "GPU peak"}
    argv = [sys.executable, __file__, f"--worker={backbone}:{variant}"] + [
        f"--{name}={getattr(FLAGS, name)}" for name in
        ("small_input", "resnet_input", "labeled_batch", "unlabeled_batch", "mixed_precision", "jit_compile")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"memory worker {backbone}:{variant} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "kind": "peak RSS"}


# ------------------------------------------------------------------------ FLOPs and projection

def profiled_flops(fn, spec) -> float:
    """Floating-point operations of one call of tf.function(fn) at `spec`, by TF's profiler."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    concrete = tf.function(tf.autograph.experimental.do_not_convert(fn)).get_concrete_function(spec)
    options = (option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
               .with_empty_output().build())
    return float(model_analyzer.profile(graph=concrete.graph, options=options).total_float_ops)


def fft_flops(clips: int) -> float:
    """The STFT's real FFTs, which the profiler does not count: ~2.5 N log2 N per frame."""
    from csr.features import frames_for

    return clips * frames_for(C.CLIP_SAMPLES) * 2.5 * C.N_FFT * math.log2(C.N_FFT)


def step_flops() -> dict:
    """FLOPs per clip of each step kind at the paper's size (ResNet50V2, 128 x 480), profiled.

    Returns train FLOPs per backbone clip for 'supervised' and 'proposed' steps (their graphs:
    front end, backbone forward and backward, heads, losses, Adam) and 'eval' per test clip.
    """
    import keras
    import tensorflow as tf

    from csr.model import build_model

    model = build_model(10, backbone="resnet50v2", weights=None, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    n_l, half, n = C.LABELED_BATCH, (C.LABELED_BATCH + C.UNLABELED_BATCH) // 2, C.CLIP_SAMPLES
    wave = lambda rows: tf.TensorSpec([rows, n], tf.float32)  # noqa: E731
    label = lambda rows: tf.TensorSpec([rows], tf.int32)  # noqa: E731
    out = {}
    model.configure(mode="supervised")
    out["supervised"] = (profiled_flops(model.train_step, (wave(n_l), label(n_l))) + fft_flops(n_l)) / n_l
    model.configure(mode="proposed")
    views = {k: wave(half) for k in ("s1", "s1_aug", "s2", "s2_aug")}
    clips = n_l + 4 * half
    out["proposed"] = (profiled_flops(model.train_step, {"x": wave(n_l), "y": label(n_l), **views})
                       + fft_flops(clips)) / clips
    out["eval"] = profiled_flops(lambda w: model(w, training=False), wave(1)) + fft_flops(1)
    out["backbone_forward"] = profiled_flops(lambda i: model.backbone(i, training=False),
                                             tf.TensorSpec([1, C.N_MELS, 480, 3], tf.float32))
    return out


def projection(flops: dict, single_pass: bool = False) -> list[dict]:
    """GPU-hours of each table's runs (paper profile), and of the runs it adds to earlier tables."""
    from csr import costs
    from csr import experiments as E

    throughput = FLAGS.gpu_tflops * 1e12 * FLAGS.gpu_utilization
    return [{"table": r["table"], "runs": r["runs"], "new_runs": r["new_runs"], "pflop": r["total"] / 1e15,
             "gpu_hours": r["total"] / throughput / 3600, "new_gpu_hours": r["new"] / throughput / 3600}
            for r in costs.table_costs(E.TABLES, "paper", flops, single_pass)]


# ---------------------------------------------------------------------------------------- main

def bench_backbone(backbone: str) -> dict:
    size = sizes_for(backbone)
    sup, prop = make_batches(FLAGS.labeled_batch, FLAGS.unlabeled_batch)
    model = build(backbone, size)
    fns = step_functions(model, sup, prop)
    seconds = time_interleaved(fns, FLAGS.rounds, FLAGS.steps)
    rows = []
    for name in VARIANTS:
        row = {"backbone": backbone, "input": size, "variant": name, "clips": fns[name][1],
               "ms": 1e3 * seconds[name], "bare_ms": 1e3 * seconds[f"bare_{name}"],
               "ratio": seconds[name] / seconds[f"bare_{name}"]}
        if FLAGS.memory:
            row["memory"] = memory(backbone, name, fns)
        rows.append(row)
    if FLAGS.memory:
        bare = memory(backbone, "bare_proposed", fns)
        rows[VARIANTS.index("proposed")]["bare_memory"] = bare
    front = {"clips": fns["front_end"][1], "ms": 1e3 * seconds["front_end"]}
    return {"rows": rows, "front_end": front}


def print_backbone(result: dict) -> None:
    labels = {"supervised": "supervised step", "proposed": "proposed, 2 passes",
              "single_pass": "proposed, 1 pass"}
    for row in result["rows"]:
        mem = ""
        if "memory" in row:
            m = row["memory"]
            growth = f" (+{m['peak_mb'] - m['built_mb']:.0f} over the built model)" if "built_mb" in m else ""
            mem = f"   {m['kind']} {m['peak_mb']:.0f} MB{growth}"
            if "bare_memory" in row:
                b = row["bare_memory"]
                growth = f" (+{b['peak_mb'] - b['built_mb']:.0f})" if "built_mb" in b else ""
                mem += f"; bare backbone {b['peak_mb']:.0f} MB{growth}"
        verdict = "ok" if row["ratio"] <= TARGET_RATIO else f"over {TARGET_RATIO}"
        print(f"{row['backbone']:<11} {row['input']:<8} {labels[row['variant']]:<20} {row['clips']:>4} clips "
              f"{row['ms']:9.1f} ms   bare backbone {row['bare_ms']:9.1f} ms   ratio {row['ratio']:5.2f} "
              f"({verdict}){mem}")
    rows = {r["variant"]: r for r in result["rows"]}
    front = result["front_end"]
    print(f"{'':<11} {rows['proposed']['input']:<8} log-mel front end alone: {front['ms']:.1f} ms for "
          f"{front['clips']} clips ({100 * front['ms'] / rows['proposed']['ms']:.1f}% of the proposed step); "
          f"one pass saves {100 * (1 - rows['single_pass']['ms'] / rows['proposed']['ms']):.1f}% of the "
          "proposed step")


def main(argv):
    del argv
    import tensorflow as tf

    if FLAGS.worker:
        print(json.dumps(memory_worker(FLAGS.worker)))
        return
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(f"devices: {devices}; batch {FLAGS.labeled_batch} labeled + {FLAGS.unlabeled_batch} unlabeled; "
          f"mixed_precision={FLAGS.mixed_precision} jit_compile={FLAGS.jit_compile}; "
          f"median of {FLAGS.rounds} rounds x {FLAGS.steps} calls")
    report = {"backbones": {}}
    for backbone in FLAGS.backbones:
        result = bench_backbone(backbone)
        report["backbones"][backbone] = result
        print_backbone(result)
    if FLAGS.projection:
        flops = step_flops()
        report["flops_per_clip"] = flops
        print(f"\nFLOPs per clip, ResNet50V2 at 128x480 (TF profiler + STFT FFTs): backbone forward "
              f"{flops['backbone_forward'] / 1e9:.2f} G; evaluation {flops['eval'] / 1e9:.2f} G; "
              f"supervised step {flops['supervised'] / 1e9:.2f} G; "
              f"proposed step {flops['proposed'] / 1e9:.2f} G "
              "(forward + backward + heads + losses + Adam, per clip through the backbone)")
        print(f"Projection at {FLAGS.gpu_tflops:g} TFLOP/s x {FLAGS.gpu_utilization:g} utilisation = "
              f"{FLAGS.gpu_tflops * FLAGS.gpu_utilization:g} TFLOP/s sustained per GPU (paper profile: "
              "ResNet50V2, the paper's epochs and batches, every fold):")
        for single in (False, True):
            rows = projection(flops, single_pass=single)
            report[f"projection{'_single_pass' if single else ''}"] = rows
            print(f"  {'with --single_pass' if single else 'two passes (default)'}:")
            for r in rows:
                print(f"    {r['table']:<9} {r['runs']:>3} runs ({r['new_runs']:>3} not in an earlier table) "
                      f"{r['pflop']:8.1f} PFLOP  {r['gpu_hours']:7.1f} GPU-h  "
                      f"(new runs {r['new_gpu_hours']:6.1f} GPU-h)")
            print(f"    all tables: {sum(r['new_gpu_hours'] for r in rows):.1f} GPU-h")
    if FLAGS.json_out:
        atomic_write_json(FLAGS.json_out, report)


if __name__ == "__main__":
    run_script(main)
