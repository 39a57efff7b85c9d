"""Batch-split mixing: the contrastive front end's augmentation (paper section 2.2, Algorithm 1).

One training step concatenates the labeled and unlabeled mini-batches, shuffles the rows, splits
them into halves s1 and s2 and builds the augmented views

    s1~ = Mixing(s1, s2),  s2~ = Mixing(s2, s1)
    Mixing(a, b) = mix(mix(offset(a), offset(b), SNR ~ U[mix_snr_db]), noise, SNR ~ U[noise_snr_db])

row by row (row i of s1 is mixed with row i of s2), where ``noise`` is unit-RMS noise of a colour
drawn per row (csr.noise) and both SNRs are exact per row. The anchor ``offset(a)`` keeps its own
level: only the partner and the noise are scaled, so the augmented view is not re-normalised.

All randomness comes from stateless ops keyed by one seed, so the whole function runs inside a
``tf.data`` map or a ``tf.function`` and is reproducible. csr.listening writes original/augmented
WAV pairs and their log-mel spectrograms for a listening check (`csr-listen OUT_DIR`).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from csr.chunking import map_rows, resolve_chunk_size
from csr.config import MIX_SNR_DB, NOISE_COLORS, NOISE_SNR_DB
from csr.noise import COLORS, make_seed, shape_noise, spectral_table, spectrum_uniforms

# Mean-square power below which a waveform counts as digital silence (-120 dB re RMS 1; clips are
# RMS-normalised to 1, and 16-bit audio's quantisation floor is about -101 dB). A silent partner gets
# gain 0 instead of an astronomically large (or infinite) one; normal signals are untouched, so
# their SNR stays exact.
SILENCE_POWER = 1e-12

# Rows per chunk of the per-row mixing work without a GPU (csr.chunking): 4 beat 2 and 8 on 2 cores.
CPU_CHUNK_ROWS = 4


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Knobs of batch_split_mix; the defaults are the paper's method.

    mixing=False is the -Mixing ablation (augmented view = time offset only: no partner, no noise);
    use_unlabeled=False is the -Unlabeled ablation (contrastive batch = labeled batch alone).
    noise / offset switch those two parts off individually (for tests and further ablations).
    """

    mix_snr_db: tuple = MIX_SNR_DB
    noise_snr_db: tuple = NOISE_SNR_DB
    colors: tuple = NOISE_COLORS
    mixing: bool = True
    noise: bool = True
    offset: bool = True
    use_unlabeled: bool = True

    def __post_init__(self):
        for name in ("mix_snr_db", "noise_snr_db"):
            value = getattr(self, name)
            if len(value) != 2 or not float(value[0]) <= float(value[1]):
                raise ValueError(f"AugmentConfig.{name} must be (low, high) with low <= high, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        colors = tuple(self.colors)
        unknown = [c for c in colors if c not in COLORS]
        if not colors or unknown:
            raise ValueError(f"AugmentConfig.colors must be a non-empty subset of {COLORS}, got {self.colors!r}")
        object.__setattr__(self, "colors", colors)


def _power(x: tf.Tensor) -> tf.Tensor:
    """Mean-square power over the last axis, keeping it (broadcasts against x)."""
    return tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)


@tf.autograph.experimental.do_not_convert  # plain graph code; skips AutoGraph's slow rewrite
def mix(signal, other, snr_db) -> tf.Tensor:
    """signal + g * other with g chosen so 10 log10(P(signal) / P(g * other)) == snr_db exactly.

    Inputs (n,) or (batch, n); snr_db scalar or (batch,). A silent ``other`` (power below
    SILENCE_POWER) gives g = 0, and so does a silent ``signal`` (no finite gain realises an SNR
    against silence): the result is then ``signal`` itself, never NaN or inf.
    """
    signal = tf.convert_to_tensor(signal, tf.float32)
    other = tf.convert_to_tensor(other, tf.float32)
    snr_db = tf.convert_to_tensor(snr_db, tf.float32)
    if snr_db.shape.rank is not None and snr_db.shape.rank >= 1:
        snr_db = snr_db[..., tf.newaxis]
    p_signal, p_other = _power(signal), _power(other)
    audible = p_other > SILENCE_POWER
    ratio = p_signal / (tf.where(audible, p_other, 1.0) * tf.pow(10.0, snr_db / 10.0))
    gain = tf.where(audible, tf.sqrt(ratio), 0.0)
    return signal + gain * other


def random_shifts(seed, rows, num_samples) -> tf.Tensor:
    """int32 (rows,) circular shifts, each U{0..num_samples-1}."""
    return tf.random.stateless_uniform([rows], seed=make_seed(seed), minval=0, maxval=num_samples,
                                       dtype=tf.int32)


# Up to this many rows (known when the graph is built) are rolled one by one with tf.roll, two
# contiguous copies each; more rows, or an unknown count, use one gather, which costs an index per
# sample but keeps the graph small.
_UNROLLED_ROLL_ROWS = 8


def roll_rows(x: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """out[i, t] = x[i, (t - shift[i]) mod n]: tf.roll with its own shift for each row."""
    rows = x.shape[0]
    if rows is not None and rows <= _UNROLLED_ROLL_ROWS:
        return tf.stack([tf.roll(x[i], shift[i], axis=0) for i in range(rows)]) if rows else x
    n = tf.shape(x)[1]
    source = tf.math.floormod(tf.range(n)[tf.newaxis, :] - shift[:, tf.newaxis], n)
    return tf.gather(x, source, batch_dims=1)


@tf.autograph.experimental.do_not_convert  # plain graph code; skips AutoGraph's slow rewrite
def random_offset(x, seed, return_shift: bool = False):
    """Circular time shift by U{0..n-1} samples, drawn per row for (batch, n) input.

    Circular (tf.roll semantics, out[t] = x[(t - shift) mod n]) rather than shift-and-pad: the clip
    keeps all of its event content and gains no artificial silence, and the shift is a pure
    rotation (same samples, same energy). With return_shift=True also returns the int32 shifts.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    if x.shape.rank not in (1, 2):
        raise ValueError(f"random_offset expects (n,) or (batch, n) input, got shape {x.shape}")
    rows = x if x.shape.rank == 2 else x[tf.newaxis]
    shift = random_shifts(seed, tf.shape(rows)[0], tf.shape(rows)[1])
    out = roll_rows(rows, shift)
    if x.shape.rank == 1:
        out, shift = out[0], shift[0]
    return (out, shift) if return_shift else out


def _uniform(seed, batch, bounds):
    return tf.random.stateless_uniform([batch], seed=seed, minval=bounds[0], maxval=bounds[1])


@tf.autograph.experimental.do_not_convert  # plain graph code; skips AutoGraph's slow rewrite
def _mixing(a, b, config: AugmentConfig, seeds, chunk: int) -> tf.Tensor:
    """Algorithm 1's Mixing(a, b, noise, SNR) for rows paired by position; seeds: (5, 2).

    Every random number is drawn for the whole batch first; the per-row work (rolls, mixing, noise
    shaping) then runs ``chunk`` rows at a time (csr.chunking), which never changes the result.
    """
    batch = tf.shape(a)[0]
    num_samples = a.shape[1] if a.shape[1] is not None else tf.shape(a)[1]
    shift_a = random_shifts(seeds[0], batch, num_samples)
    if not config.mixing:
        return roll_rows(a, shift_a) if config.offset else a
    parts = [a, b, shift_a, random_shifts(seeds[1], batch, num_samples),
             _uniform(seeds[2], batch, config.mix_snr_db)]
    if config.noise:
        palette = tf.constant([COLORS.index(c) for c in config.colors], tf.int32)
        pick = tf.random.stateless_uniform([batch], seed=seeds[3], minval=0,
                                           maxval=len(config.colors), dtype=tf.int32)
        noise_seeds = tf.random.experimental.stateless_split(seeds[4], num=2)
        parts += [tf.gather(palette, pick), spectrum_uniforms(batch, num_samples, noise_seeds[0]),
                  _uniform(noise_seeds[1], batch, config.noise_snr_db)]
        gains_table = spectral_table(num_samples)

    def mix_rows(rows):
        anchor, partner, shift_anchor, shift_partner, mix_snr = rows[:5]
        if config.offset:
            anchor, partner = roll_rows(anchor, shift_anchor), roll_rows(partner, shift_partner)
        view = mix(anchor, partner, mix_snr)
        if not config.noise:
            return view
        colours, uniforms, noise_snr = rows[5:]
        noise = shape_noise(uniforms, tf.gather(gains_table, colours), num_samples)
        return mix(view, noise, noise_snr)

    return map_rows(mix_rows, tuple(parts), chunk, (num_samples,))


@tf.autograph.experimental.do_not_convert  # plain graph code; skips AutoGraph's slow rewrite
def batch_split_mix(labeled, unlabeled, config: AugmentConfig = AugmentConfig(), seed=None,
                    return_index: bool = False, chunk_size: int | None = None):
    """Algorithm 1, lines 6-8: (s1, s1~, s2, s2~) [, source_index].

    labeled (n_l, n) and unlabeled (n_u, n) waveforms (unlabeled may be None, and is ignored when
    config.use_unlabeled is False). s1, s2 are the ORIGINAL shuffled rows; source_index (int32,
    (n_l + n_u,)) gives for each row of concat(s1, s2) its row in concat(labeled, unlabeled), so rows
    with index < n_l are labeled and their labels are labels[index]. The total must be even.
    chunk_size: rows per chunk of the per-row work (csr.chunking; None = auto); never changes results.
    """
    labeled = tf.convert_to_tensor(labeled, tf.float32)
    parts = [labeled]
    if config.use_unlabeled and unlabeled is not None:
        parts.append(tf.convert_to_tensor(unlabeled, tf.float32))
    for part in parts:
        if part.shape.rank != 2:
            raise ValueError(f"batch_split_mix expects (batch, samples) waveforms, got shape {part.shape}")
    static_rows = [part.shape[0] for part in parts]
    total_static = None if None in static_rows else sum(static_rows)
    if total_static is not None and total_static % 2:
        raise ValueError(f"batch_split_mix needs an even total batch to split in halves, got {total_static} "
                         f"rows ({' + '.join(str(p.shape[0]) for p in parts)})")
    total = tf.add_n([tf.shape(part)[0] for part in parts])
    check = tf.debugging.assert_equal(total % 2, 0, message="batch_split_mix needs an even total batch "
                                      "(labeled + unlabeled rows) to split in halves")
    with tf.control_dependencies([check]):
        half = total // 2
    chunk = resolve_chunk_size(chunk_size, CPU_CHUNK_ROWS)

    seeds = tf.random.experimental.stateless_split(make_seed(seed), num=11)
    order = tf.argsort(tf.random.stateless_uniform([total], seed=seeds[0]))
    if len(parts) > 1:  # row i of the concatenation goes to position inverse[i]: one copy, no concat
        inverse = tf.math.invert_permutation(order)
        n_labeled = tf.shape(parts[0])[0]
        shuffled = tf.dynamic_stitch([inverse[:n_labeled], inverse[n_labeled:]], parts)
    else:
        shuffled = tf.gather(labeled, order)
    s1, s2 = shuffled[:half], shuffled[half:]
    s1_aug = _mixing(s1, s2, config, seeds[1:6], chunk)
    s2_aug = _mixing(s2, s1, config, seeds[6:11], chunk)
    outputs = (s1, s1_aug, s2, s2_aug)
    return (outputs + (tf.cast(order, tf.int32),)) if return_index else outputs


def row_labels(source_index, labels):
    """Label of each row of concat(s1, s2) from batch_split_mix's source_index; -1 if unlabeled.

    Rows whose source index is below len(labels) come from the labeled batch (labels[index]); the
    rest come from the unlabeled batch.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    source_index = tf.cast(source_index, tf.int32)
    n_labeled = tf.shape(labels)[0]
    from_labeled = source_index < n_labeled
    safe = tf.where(from_labeled, source_index, tf.zeros_like(source_index))
    return tf.where(from_labeled, tf.gather(labels, safe), -tf.ones_like(source_index))


def mixed_views(x, y, unlabeled, config: AugmentConfig, seed, chunk_size: int | None = None) -> dict:
    """One joint-training batch: the labeled x, y and batch_split_mix's views with per-row labels.

    Keys "x", "y", "s1", "s1_aug", "s2", "s2_aug", and "s1_y", "s2_y" (the label of each row of s1
    and s2, -1 for an unlabeled clip). The tf.data pipeline calls this on the host, or
    CSRModel.train_step on the accelerator (csr.pipeline's mix_on), with the same seed.
    """
    s1, s1_aug, s2, s2_aug, source = batch_split_mix(x, unlabeled, config, seed=seed,
                                                     return_index=True, chunk_size=chunk_size)
    labels = row_labels(source, y)
    half = tf.shape(s1)[0]
    return {"x": x, "y": y, "s1": s1, "s1_aug": s1_aug, "s2": s2, "s2_aug": s2_aug,
            "s1_y": labels[:half], "s2_y": labels[half:]}
