"""tf.distribute for csr: the strategy for a run, and the cross-replica sums and gathers of a step.

The training step is written once, for any number of replicas. Each replica gets a contiguous
slice of the global batch (tf.distribute splits every key of the dict batch the same way, so an
original and its augmented view stay on the same replica) and returns its *contribution* to the
global loss: the sum of its per-example terms divided by the global number of examples, so the
contributions add up to the single-device loss. The step then sums the gradients over replicas
(`sum_gradients`; Keras 3.4.1's optimizer does not on MirroredStrategy's usual path), so every
replica applies the gradient of the single-device loss. The helpers below are the identity with
one replica, so the default strategy runs no collective op at all.

Strategies (`make_strategy`):
  default     one device (TensorFlow's default strategy: the first GPU, else the CPU);
  mirrored    every local GPU (tf.distribute.MirroredStrategy), or the devices given;
  multiworker several machines (tf.distribute.MultiWorkerMirroredStrategy), described by the
              TF_CONFIG environment variable that each worker is started with.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from csr.config import STRATEGIES
from csr.errors import UserError


class StrategyError(UserError, ValueError):
    """A strategy was asked for that this machine or environment cannot provide."""


_CREATED: dict = {}


def make_strategy(name: str = "default", devices=None) -> tf.distribute.Strategy:
    """The tf.distribute strategy named by --strategy (see the module docstring).

    One instance per (name, devices) per process: a multi-worker strategy must be created before
    TensorFlow runs its first op and only once, so an entry point creates it at start-up and the
    trainer's later call returns the same object.
    """
    key = (name, tuple(devices) if devices else None)
    if key not in _CREATED:
        _CREATED[key] = _new_strategy(name, devices)
    return _CREATED[key]


def _new_strategy(name, devices):
    if name not in STRATEGIES:
        raise StrategyError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "default":
        if devices:
            raise StrategyError("strategy 'default' runs on one device; pass devices only with 'mirrored'")
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise StrategyError(
            "--strategy=multiworker needs the TF_CONFIG environment variable on every worker, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\'')
    try:
        spec = json.loads(raw)
        workers = spec["cluster"]["worker"]
        index = int(spec["task"]["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise StrategyError(f"TF_CONFIG is not a valid cluster description ({err!r}): {raw}") from err
    if not 0 <= index < len(workers):
        raise StrategyError(f"TF_CONFIG: task index {index} is outside the {len(workers)} workers")
    return tf.distribute.MultiWorkerMirroredStrategy()


def worker_subdir(strategy) -> str:
    """'' for a single-worker run or a multi-worker run's chief; 'workers/<task><index>' otherwise.

    All workers of a multi-worker run compute the same weights and metrics; the chief (task 0)
    owns the run directory and the others write their copies below it, so no two processes
    replace the same file.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return ""
    task_id = int(resolver.task_id or 0)
    is_chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and task_id == 0
                                                  and "chief" not in resolver.cluster_spec().as_dict())
    return "" if is_chief else f"workers/{resolver.task_type}{task_id}"


def num_replicas() -> int:
    """Replicas taking part in the current step (1 outside a replica context or without a strategy)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def replica_seed(seed):
    """A stateless seed of this replica's own: `seed` with one replica, else seed folded with the
    replica's id, so replicas that mix their own rows draw different random numbers."""
    if num_replicas() == 1:
        return seed
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int32))


def global_sum(value):
    """Sum of `value` (a tensor or a nest of tensors) over all replicas; identity with one replica."""
    if num_replicas() == 1:
        return value
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def gather_rows(value):
    """(rows of every replica concatenated in replica order, offset of this replica's first row).

    Differentiable: the gradient that reaches a replica's rows is the sum, over replicas, of the
    gradients of their losses with respect to those rows (tf.distribute's all_gather gradient). The
    replicas may hold different numbers of rows.
    """
    if num_replicas() == 1:
        return value, tf.constant(0, tf.int32)
    context = tf.distribute.get_replica_context()
    gathered = context.all_gather(value, axis=0)
    sizes = context.all_gather(tf.reshape(tf.shape(value)[0], [1]), axis=0)
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    offset = tf.reduce_sum(tf.where(tf.range(tf.shape(sizes)[0]) < replica, sizes, tf.zeros_like(sizes)))
    return gathered, offset


def gather_constant(value):
    """Rows of every replica concatenated in replica order, without a gradient; `value` may be a
    nest of tensors (labels, logits for a metric), gathered in one collective."""
    if num_replicas() == 1:
        return value
    gathered = tf.distribute.get_replica_context().all_gather(value, axis=0)
    return tf.nest.map_structure(tf.stop_gradient, gathered)


def optimizer_sums_gradients() -> bool:
    """Whether Keras' optimizer will sum this step's gradients over replicas by itself.

    Keras 3.4.1's TF optimizer sums them only when the strategy runs without merge_call (XLA on
    GPUs); on the merge_call path it finds no replica context and applies each replica's own
    gradients to its own copy of the variables, so the copies drift apart (keras-team/keras#19308).
    """
    return bool(tf.__internal__.distribute.strategy_supports_no_merge_call())


def sum_gradients(grads):
    """Gradients summed over replicas, unless there is one replica or the optimizer will do it."""
    if num_replicas() == 1 or optimizer_sums_gradients():
        return list(grads)
    grads = list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = _all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
    for i, value in zip(present, summed):
        grads[i] = value
    return grads


def _all_reduce(op, tensors):
    """One all-reduce per dtype (a batched all-reduce packs its tensors into one buffer)."""
    context = tf.distribute.get_replica_context()
    out = [None] * len(tensors)
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        idx = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        for i, value in zip(idx, context.all_reduce(op, [tensors[i] for i in idx])):
            out[i] = value
    return out


def agree_on_finite(grads):
    """Make every replica see non-finite gradients when any replica has them.

    Needed when the optimizer sums the gradients itself (see optimizer_sums_gradients): then
    Keras' LossScaleOptimizer decides on each replica from its local gradients, and replicas that
    disagree would take different branches around a collective. Adding NaN everywhere when any
    replica overflowed makes all replicas skip the step together. After sum_gradients every
    replica already holds the same (summed) gradients, and this is the identity.
    """
    if num_replicas() == 1 or not optimizer_sums_gradients():
        return grads
    finite = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
    local_bad = tf.logical_not(tf.reduce_all(finite))
    any_bad = global_sum(tf.cast(local_bad, tf.float32)) > 0
    return [None if g is None else g + tf.cast(tf.where(any_bad, float("nan"), 0.0), g.dtype) for g in grads]


def average_moving_statistics(batchnorm_layers) -> None:
    """Average the BatchNorm moving mean and variance over replicas after a training step.

    Keras 3.4.1 creates them as plain mirrored variables and each replica updates its own copy
    from its own slice of the batch, so without this the copies drift apart: evaluation would use
    different statistics on each replica and a checkpoint would keep the first replica's. The
    average is what Keras 2's MEAN aggregation gave. Nothing to do with one replica, or for layers
    with synchronised statistics (every replica already computed the same update).
    """
    if num_replicas() == 1:
        return
    variables = []
    for layer in batchnorm_layers:
        if not layer.synchronized:
            variables += [layer.moving_mean, layer.moving_variance]
    if not variables:
        return
    means = _all_reduce(tf.distribute.ReduceOp.MEAN, [tf.convert_to_tensor(v) for v in variables])
    for variable, mean in zip(variables, means):
        variable.assign(mean)


def keras_logs(metrics) -> dict:
    """A train/test step's return value: {name: result} of the given Keras metrics.

    Keras 3.4.1 averages a multi-worker step's outputs with strategy.reduce(MEAN, axis=0), which
    fails on scalars ("Invalid reduction dimension 0"); there each value gets shape [1], which that
    reduction turns back into a scalar. Elsewhere the values stay scalars.
    """
    strategy = tf.distribute.get_strategy()
    multi_worker = (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                    and strategy.extended._in_multi_worker_mode())
    return {m.name: tf.reshape(m.result(), [1]) if multi_worker else m.result() for m in metrics}
