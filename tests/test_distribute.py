"""tf.distribute, mixed precision and XLA: the same global batch gives the same step everywhere.

The strategy tests need two logical CPU devices, which must be configured before TensorFlow
initialises its devices, so they run in a subprocess (this file run as a script with --worker):
the pytest process keeps its ordinary single CPU. The worker trains one step of the same model on
the same global batch on one device and on two replicas (MirroredStrategy over the two logical
CPUs), with plain SGD at learning rate 1 so that each weight's change is its gradient, and prints
the numbers as JSON. Toy sizes (8 kHz, 0.5 s clips, the small CNN) keep the file fast.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SR, CLIP = 8000, 4000
TINY = dict(sample_rate=SR, clip_samples=CLIP, n_fft=256, hop_length=64, n_mels=32, f_max=4000.0,
            backbone="small", weights=None, projection_dim=16, hidden_dim=32)
LOG_KEYS = ("loss", "clf_loss", "reg_loss", "accuracy", "contrastive_accuracy")


def _tones(count, seed):
    """Two classes (low / high tone) with random phase and noise; float32 (count, CLIP), labels."""
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP) / SR
    labels = np.arange(count) % 2
    freq = np.where(labels == 0, 300.0, 2500.0)[:, None] * rng.uniform(0.9, 1.1, (count, 1))
    waves = (np.sin(2 * np.pi * freq * t + rng.uniform(0, 6, (count, 1)))
             + 0.3 * rng.standard_normal((count, CLIP)))
    return waves.astype(np.float32), labels.astype(np.int32)


def proposed_batch(seed=0, labeled=8, unlabeled=8, mix_on="host"):
    """One dict batch from the real pipeline: labeled tones + unlabeled noise, batch-split-mixed
    (mix_on="host") or raw clips and the step's seed for the step to mix (mix_on="device")."""
    from csr import pipeline

    x, y = _tones(labeled, seed)
    u = np.random.default_rng(seed + 1).standard_normal((unlabeled, CLIP)).astype(np.float32)
    ds = pipeline.proposed_dataset(x, y, u, epoch=0, seed=seed, labeled_batch=labeled,
                                   unlabeled_batch=unlabeled, mix_on=mix_on)
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def one_step(strategy, batch, *, mode, sync_bn=False, local_negatives=False, single_pass=False,
             policy="float32", jit_compile=False, seed=0):
    """(logs, per-variable gradients, model) of one fit step with SGD(1.0) from a seeded init.

    policy: the Keras dtype policy the model is built under ("float64" for sharp comparisons: the
    front end, logits and losses stay float32 regardless; "mixed_float16").
    """
    import keras
    import tensorflow as tf

    from csr.model import build_model, set_sync_batchnorm

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        with strategy.scope():
            model = build_model(2, seed=seed, **TINY)
            if sync_bn:
                set_sync_batchnorm(model)
            model.configure(mode=mode, local_negatives=local_negatives, single_pass=single_pass)
            model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=jit_compile)
    finally:
        keras.config.set_dtype_policy(previous)
    before = [v.numpy().copy() for v in model.trainable_variables]
    data = batch if mode == "proposed" else (batch["x"], batch["y"])
    logs = model.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0).history
    grads = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
    return {k: float(v[0]) for k, v in logs.items()}, grads, model


def _flat(grads):
    return np.concatenate([np.ravel(g) for g in grads]).astype(np.float64)


def grad_mismatch(a, b):
    """Relative distance between two gradient lists: |a - b| / |a| over all variables."""
    a, b = _flat(a), _flat(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def reference_nt_xent(z, z_aug, temperature):
    """NTXentLoss in float64 numpy: 2N anchors, positive = the pair, the anchor itself excluded; the
    sum of the two directions' means (originals as anchors, augmentations as anchors)."""
    emb = np.concatenate([z, z_aug]).astype(np.float64)
    n = len(z)
    logits = emb @ emb.T / temperature
    np.fill_diagonal(logits, -np.inf)
    positives = np.concatenate([np.arange(n) + n, np.arange(n)])
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    per_anchor = log_norm - logits[np.arange(2 * n), positives]
    return float(per_anchor[:n].mean() + per_anchor[n:].mean())


# ----------------------------------------------------------------------------- the subprocess

def _worker() -> dict:
    """Runs with two logical CPUs; returns every number the strategy tests check."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras

    from csr.distribute import make_strategy
    from csr.model import build_model, set_sync_batchnorm

    one = tf.distribute.get_strategy()
    two = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    batch = proposed_batch(seed=0)
    out = {"replicas": two.num_replicas_in_sync}

    # float64 weights and activations: in float32, synchronised BatchNorm's E[x^2] - E[x]^2 makes
    # the early layers' gradients depend on the summation order at the 1e-3 level, which would hide
    # a real mismatch; in float64 the two agree to ~1e-7 (the float32 losses' precision).
    sharp = dict(sync_bn=True, policy="float64")
    for name, kwargs in (("supervised", dict(mode="supervised", **sharp)),
                         ("proposed", dict(mode="proposed", **sharp)),
                         ("single_pass", dict(mode="proposed", single_pass=True, **sharp))):
        logs_one, grads_one, _ = one_step(one, batch, **kwargs)
        logs_two, grads_two, _ = one_step(two, batch, **kwargs)
        out[name] = {"one": logs_one, "two": logs_two, "grad_mismatch": grad_mismatch(grads_one, grads_two),
                     "grad_norm": float(np.linalg.norm(_flat(grads_one)))}

    # NT-Xent references from the same seeded init, in float64 numpy. Global negatives: the
    # float64 step above against embeddings of the whole batch. Local negatives (here without sync
    # BN): each replica's own NT-Xent on its contiguous half of every view, embedded from that half
    # alone (its BatchNorm statistics are the half's), averaged over the two replicas.
    keys = ("s1", "s1_aug", "s2", "s2_aug")
    n = len(batch["s1"])
    halves = [slice(0, n // 2), slice(n // 2, n)]

    def pairs_of(model, rows):
        z = model.project(np.concatenate([batch[k][rows] for k in keys]), training=True).numpy()
        z1, z1a, z2, z2a = np.split(z, 4)
        return (z1, z1a), (z2, z2a)

    keras.config.set_dtype_policy("float64")
    try:
        init64 = build_model(2, seed=0, **TINY)
    finally:
        keras.config.set_dtype_policy("float32")
    set_sync_batchnorm(init64)
    init32 = build_model(2, seed=0, **TINY)
    logs_local, _, model = one_step(two, batch, mode="proposed", local_negatives=True)
    out["negatives"] = {
        "global": out["proposed"]["two"]["reg_loss"],
        "reference_global": sum(reference_nt_xent(a, b, 0.01) for a, b in pairs_of(init64, slice(None))),
        "local": logs_local["reg_loss"],
        "reference_local": float(np.mean([sum(reference_nt_xent(a, b, 0.01) for a, b in pairs_of(init32, h))
                                          for h in halves])),
    }

    # mix_on="device": each replica mixes its own rows with its own seed.
    logs_dev, grads_dev, _ = one_step(two, proposed_batch(seed=0, mix_on="device"), mode="proposed")
    out["device_mixing"] = {"logs": logs_dev, "grad_norm": float(np.linalg.norm(_flat(grads_dev)))}

    # Without sync BN each replica updates its own copy of the moving statistics from its own
    # half; the step averages them so the copies stay equal.
    bn = model.backbone.get_layer("bn0")
    copies = [c.numpy() for c in bn.moving_mean.value.values]
    out["moving_mean"] = {"copies_max_diff": float(np.abs(copies[0] - copies[1]).max()),
                          "moved": float(np.abs(copies[0]).max())}
    return out


@pytest.fixture(scope="module")
def worker():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, __file__, "--worker"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["supervised", "proposed", "single_pass"])
def test_two_replicas_give_the_single_device_loss_and_gradients(worker, case):
    result = worker[case]
    assert worker["replicas"] == 2
    for key in LOG_KEYS:
        if key in result["one"]:
            assert result["two"][key] == pytest.approx(result["one"][key], rel=2e-5, abs=1e-6), key
    # Wrong loss scaling (mean per replica) would halve the gradient, a missing sum drops half.
    assert result["grad_norm"] > 1e-2
    assert result["grad_mismatch"] < 1e-5


def test_negatives_come_from_all_replicas_unless_local(worker):
    result = worker["negatives"]
    # Global negatives (default): NT-Xent over the whole batch, as on one device.
    assert result["global"] == pytest.approx(result["reference_global"], rel=1e-4)
    # Local negatives: the mean of the replicas' own NT-Xent terms, a different (smaller) number.
    assert result["local"] == pytest.approx(result["reference_local"], rel=1e-4)
    assert result["local"] < result["reference_global"] - 0.1


def test_replicas_keep_one_copy_of_the_batchnorm_statistics(worker):
    moving = worker["moving_mean"]
    assert moving["moved"] > 1e-4
    assert moving["copies_max_diff"] < 1e-7


def test_device_mixing_runs_on_two_replicas(worker):
    result = worker["device_mixing"]
    assert all(np.isfinite(v) for v in result["logs"].values())
    assert set(result["logs"]) >= set(LOG_KEYS)
    assert result["logs"]["reg_loss"] > 0.0 and result["grad_norm"] > 1e-2


# ------------------------------------------------------------------- in process: precision, XLA

@pytest.mark.parametrize("single_pass", [False, True])
def test_mixing_in_the_step_equals_mixing_in_the_pipeline(single_pass):
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    host = proposed_batch(seed=5, labeled=4, unlabeled=4, mix_on="host")
    device = proposed_batch(seed=5, labeled=4, unlabeled=4, mix_on="device")
    assert set(device) == {"x", "y", "u", "mix_seed"}
    kwargs = dict(mode="proposed", seed=5, policy="float64", single_pass=single_pass)
    logs_host, grads_host, _ = one_step(strategy, host, **kwargs)
    logs_device, grads_device, _ = one_step(strategy, device, **kwargs)
    for key in LOG_KEYS:
        assert logs_device[key] == pytest.approx(logs_host[key], rel=1e-5, abs=1e-6), key
    assert grad_mismatch(grads_host, grads_device) < 1e-5


def test_mixing_in_the_step_rejects_an_odd_total():
    import keras

    from csr.model import build_model

    batch = proposed_batch(seed=6, labeled=3, unlabeled=2, mix_on="device")
    model = build_model(2, seed=6, **TINY)
    model.configure(mode="proposed")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="3 labeled \\+ 2 unlabeled = 5 is odd"):
        model.train_on_batch(batch)


def test_strategy_names_and_multiworker_needs_tf_config(monkeypatch):
    import tensorflow as tf

    from csr.distribute import StrategyError, make_strategy

    assert make_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(StrategyError, match="unknown strategy 'tpu'"):
        make_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="needs the TF_CONFIG environment variable"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG",
                       '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(StrategyError, match="task index 3 is outside the 1 workers"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(StrategyError, match="not a valid cluster description"):
        make_strategy("multiworker")


def test_mixed_precision_step_is_finite_and_close_to_float32():
    import keras
    import tensorflow as tf

    from csr.model import build_model

    batch = proposed_batch(seed=3, labeled=4, unlabeled=4)
    logs32, grads32, _ = one_step(tf.distribute.get_strategy(), batch, mode="proposed", seed=3)

    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model(2, seed=3, **TINY)
    finally:
        keras.config.set_dtype_policy("float32")
    model.configure(mode="proposed")
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.backbone.compute_dtype == "float16"
    # Logits and embeddings (hence similarities and losses) stay float32.
    assert model(batch["x"]).dtype == tf.float32 and model.project(batch["x"]).dtype == tf.float32
    before = [v.numpy().copy() for v in model.trainable_variables]
    # Dynamic loss scaling starts at 2**15: a step whose scaled gradients overflow float16 is
    # skipped (weights untouched) and the scale halved, until one is applied.
    skipped = 0
    while model.optimizer.inner_optimizer.iterations.numpy() == 0:
        assert skipped < 16, "every loss-scaled step overflowed"
        scale = float(model.optimizer.dynamic_scale.numpy())
        logs16 = model.train_on_batch(batch, return_dict=True)
        skipped += int(model.optimizer.inner_optimizer.iterations.numpy() == 0)
        assert all(np.isfinite(v) for v in logs16.values())
    assert float(model.optimizer.dynamic_scale.numpy()) == scale  # the applied step kept its scale
    grads16 = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
    assert all(np.isfinite(g).all() for g in grads16)
    for key in ("loss", "clf_loss", "reg_loss"):
        assert logs16[key] == pytest.approx(logs32[key], rel=2e-2), key
    a, b = _flat(grads32), _flat(grads16)
    # Direction: float16 rounding of the embeddings is amplified by 1/tau = 100 in the similarities, and
    # NT-Xent at the authors' scale (the sum of its two directions) weighs it twice: cosine 0.9885 measured
    # here, a little lower on CI's CPU (its oneDNN float16 kernels round differently), so 0.97.
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine > 0.97, cosine
    # Magnitude: the loss scale (2**15 halved per skipped step) is fully undone; a scale left in the
    # gradient, or applied twice, would be off by a power of two, not by a few per cent.
    ratio = float(np.linalg.norm(b) / np.linalg.norm(a))
    assert 0.9 < ratio < 1.1, ratio


def test_xla_step_matches_the_graph_step():
    import tensorflow as tf

    batch = proposed_batch(seed=4, labeled=4, unlabeled=4)
    strategy = tf.distribute.get_strategy()
    # float64 for a sharp comparison: XLA's fusions round float32 differently, and NT-Xent at
    # temperature 0.01 after BatchNorm turns that into ~5e-3 gradient differences.
    logs, grads, _ = one_step(strategy, batch, mode="proposed", seed=4, policy="float64")
    logs_xla, grads_xla, model = one_step(strategy, batch, mode="proposed", seed=4, policy="float64",
                                          jit_compile=True)
    assert model.jit_compile is True
    for key in LOG_KEYS:
        assert logs_xla[key] == pytest.approx(logs[key], rel=1e-5, abs=1e-6), key
    assert grad_mismatch(grads, grads_xla) < 1e-5


def _multiworker(index: int, ports: list) -> dict:
    """One worker of a two-process MultiWorkerMirroredStrategy on this machine (TF_CONFIG)."""
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})
    from csr.distribute import make_strategy

    strategy = make_strategy("multiworker")  # before any other TensorFlow op
    logs, grads, _ = one_step(strategy, proposed_batch(seed=0), mode="proposed", sync_bn=True, policy="float64")
    return {"replicas": strategy.num_replicas_in_sync, "logs": logs, "grads": _flat(grads).tolist()}


@pytest.mark.slow
def test_two_workers_give_the_single_device_loss_and_gradients():
    import socket

    import tensorflow as tf

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    procs = [subprocess.Popen([sys.executable, __file__, "--multiworker", str(i), json.dumps(ports)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-5000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    logs, grads, _ = one_step(tf.distribute.get_strategy(), proposed_batch(seed=0), mode="proposed",
                              sync_bn=True, policy="float64")
    for result in results:
        assert result["replicas"] == 2
        for key in LOG_KEYS:
            assert result["logs"][key] == pytest.approx(logs[key], rel=2e-5, abs=1e-6), key
        got = np.asarray(result["grads"])
        assert np.linalg.norm(got - _flat(grads)) / np.linalg.norm(_flat(grads)) < 1e-5


if __name__ == "__main__":
    if "--worker" in sys.argv:
        print(json.dumps(_worker()))
    elif "--multiworker" in sys.argv:
        at = sys.argv.index("--multiworker")
        print(json.dumps(_multiworker(int(sys.argv[at + 1]), json.loads(sys.argv[at + 2]))))
