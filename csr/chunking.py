"""Row-chunked execution: run a batch op a few rows at a time so its intermediates stay in cache.

On a CPU, batch-wide ops over five-second clips (STFT frames, noise spectra) create tens of MB of
intermediates per pass and run at memory speed; a chunk of a few clips keeps them in the CPU's
caches (2-3x faster on 2 cores, reproduce/bench_frontend.py). The best chunk differs by op (log-mel
2 rows, mixing 4), so each caller passes its own CPU default. A GPU wants the whole batch, so
"auto" chunks only when no GPU is visible. Chunking never changes results: the functions chunked
here treat rows independently and all randomness is drawn before the split.
"""

from __future__ import annotations

import tensorflow as tf


def resolve_chunk_size(chunk_size: int | None, cpu_rows: int) -> int:
    """None (auto) -> ``cpu_rows`` when no GPU is visible, else 0 (the whole batch at once).

    An explicit chunk_size (0 = whole batch, or rows per chunk) is validated and returned.
    """
    if chunk_size is None:
        return 0 if tf.config.list_logical_devices("GPU") else int(cpu_rows)
    if int(chunk_size) != chunk_size or int(chunk_size) < 0:
        raise ValueError(f"chunk_size must be None (auto), 0 (whole batch) or a positive integer, "
                         f"got {chunk_size!r}")
    return int(chunk_size)


def map_rows(fn, inputs, chunk: int, row_shape, dtype=tf.float32) -> tf.Tensor:
    """fn over ``chunk`` rows of ``inputs`` at a time, the results re-joined; chunk 0 = one call.

    inputs: a tensor or a tuple of tensors sharing their first (row) dimension; fn takes the same
    structure with ``chunk`` rows and returns one ``dtype`` tensor of shape (chunk, *row_shape)
    (ints or scalar int tensors). The last chunk is zero-padded, so fn must treat rows
    independently (and accept all-zero rows); any batch size works, including 0 and a dynamic one.
    """
    if not chunk:
        return fn(inputs)
    flat = tf.nest.flatten(inputs)
    static_rows = flat[0].shape[0]
    if static_rows and static_rows % chunk == 0:
        rows = padded = static_rows  # the usual case: no padding copy
    else:
        rows = tf.shape(flat[0])[0]
        # At least one chunk: map_fn cannot stack zero results whose shape is known only at run time.
        padded = tf.maximum(-(-rows // chunk), 1) * chunk

    def split(t):
        if padded is not rows:
            pads = tf.concat([[[0, padded - rows]], tf.zeros([tf.rank(t) - 1, 2], tf.int32)], 0)
            t = tf.pad(t, pads)
        return tf.reshape(t, tf.concat([[padded // chunk, chunk], tf.shape(t)[1:]], axis=0))

    chunks = tf.nest.pack_sequence_as(inputs, [split(t) for t in flat])
    static = [d if isinstance(d, int) else None for d in row_shape]
    # Two chunks in flight in a graph; eager map_fn runs one at a time (and warns if asked for more).
    out = tf.map_fn(fn, chunks, parallel_iterations=None if tf.executing_eagerly() else 2,
                    fn_output_signature=tf.TensorSpec([chunk, *static], dtype))
    out = tf.reshape(out, tf.stack([padded, *row_shape]))
    return out if padded is rows else out[:rows]
