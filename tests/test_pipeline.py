"""tf.data pipelines: coverage, label alignment, determinism and resumability."""

import numpy as np
import pytest

from csr import pipeline
from csr.augment import AugmentConfig

N_SAMPLES = 256


def _tagged(n, offset=0.0):
    """Rows whose constant value identifies them: row i holds (i + offset + 1)."""
    return (np.arange(n, dtype=np.float32)[:, None] + offset + 1) * np.ones((1, N_SAMPLES), np.float32)


def _row_ids(batch, offset=0.0):
    return np.rint(np.asarray(batch)[:, 0] - offset - 1).astype(int)


def test_stream_indices_are_permutation_cycles_and_resumable():
    whole = pipeline.stream_indices(7, seed=3, start=0, count=35)
    for cycle in range(5):
        assert sorted(whole[cycle * 7:(cycle + 1) * 7]) == list(range(7))
    assert not np.array_equal(whole[:7], whole[7:14])
    # Any slice equals the same positions of the whole stream: resuming at step k needs no replay.
    np.testing.assert_array_equal(pipeline.stream_indices(7, 3, 12, 9), whole[12:21])
    assert not np.array_equal(pipeline.stream_indices(7, 4, 0, 35), whole)
    with pytest.raises(ValueError):
        pipeline.stream_indices(0, 0, 0, 1)


def test_steps_per_epoch_counts_full_batches_over_the_labeled_set():
    assert pipeline.steps_per_epoch(30, 8) == 4
    assert pipeline.steps_per_epoch(32, 8) == 4
    assert pipeline.steps_per_epoch(3, 8) == 1


def test_supervised_epoch_covers_every_clip_with_its_label():
    waves = _tagged(30).astype(np.float16)
    labels = np.arange(30) % 7
    batches = list(pipeline.supervised_dataset(waves, labels, epoch=0, seed=1, batch_size=8))
    assert len(batches) == 4 and all(x.shape == (8, N_SAMPLES) for x, _ in batches)
    ids = np.concatenate([_row_ids(x) for x, _ in batches])
    ys = np.concatenate([y.numpy() for _, y in batches])
    np.testing.assert_array_equal(ys, labels[ids])
    assert set(ids[:30]) == set(range(30))  # the first pass is a permutation
    assert batches[0][0].dtype.name == "float32"


def test_epochs_reshuffle_and_are_reproducible():
    waves, labels = _tagged(16), np.arange(16)
    first = [y.numpy() for _, y in pipeline.supervised_dataset(waves, labels, epoch=0, seed=5)]
    again = [y.numpy() for _, y in pipeline.supervised_dataset(waves, labels, epoch=0, seed=5)]
    second = [y.numpy() for _, y in pipeline.supervised_dataset(waves, labels, epoch=1, seed=5)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))


def test_proposed_batches_contain_labeled_and_unlabeled_rows_once():
    labeled, unlabeled = _tagged(12), _tagged(40, offset=1000.0)
    labels = np.arange(12) * 10
    cfg = AugmentConfig()
    for batch in pipeline.proposed_dataset(labeled, labels, unlabeled, epoch=0, seed=2, config=cfg):
        assert batch["s1"].shape == (20, N_SAMPLES) and batch["s1_aug"].shape == (20, N_SAMPLES)
        x_ids = _row_ids(batch["x"])
        np.testing.assert_array_equal(batch["y"].numpy(), labels[x_ids])
        rows = np.concatenate([batch["s1"].numpy(), batch["s2"].numpy()])[:, 0]
        assert sorted(np.rint(rows[rows < 1000]).astype(int) - 1) == sorted(x_ids)
        assert np.sum(rows > 1000) == 32
        assert not np.allclose(batch["s1_aug"].numpy(), batch["s1"].numpy())


def test_proposed_epoch_is_a_pure_function_of_seed_and_epoch():
    labeled, unlabeled = np.random.default_rng(0).standard_normal((2, 20, N_SAMPLES)).astype(np.float32)
    labels = np.arange(20)

    def epoch(e, seed=7):
        return [b["s2_aug"].numpy() for b in pipeline.proposed_dataset(
            labeled, labels, unlabeled, epoch=e, seed=seed)]

    np.testing.assert_array_equal(np.stack(epoch(1)), np.stack(epoch(1)))
    assert not np.allclose(np.stack(epoch(1)), np.stack(epoch(2)))
    assert not np.allclose(np.stack(epoch(1)), np.stack(epoch(1, seed=8)))


def test_no_unlabeled_ablation_uses_the_labeled_batch_alone():
    labeled = _tagged(16)
    cfg = AugmentConfig(use_unlabeled=False)
    batch = next(iter(pipeline.proposed_dataset(labeled, np.arange(16), _tagged(40, 1000.0),
                                                epoch=0, seed=0, config=cfg)))
    assert batch["s1"].shape == (4, N_SAMPLES)
    rows = np.concatenate([batch["s1"].numpy(), batch["s2"].numpy()])[:, 0]
    assert sorted(np.rint(rows).astype(int) - 1) == sorted(_row_ids(batch["x"]))


@pytest.mark.parametrize("cfg", [AugmentConfig(), AugmentConfig(use_unlabeled=False)])
def test_device_batches_carry_raw_clips_and_the_host_seed(cfg):
    """mix_on="device" hands the step the same clips and seed the host would have mixed."""
    from csr.augment import mixed_views

    labeled, unlabeled = _tagged(12), _tagged(40, offset=1000.0)
    labels = np.arange(12)
    host = list(pipeline.proposed_dataset(labeled, labels, unlabeled, epoch=1, seed=3, config=cfg))
    device = list(pipeline.proposed_dataset(labeled, labels, unlabeled, epoch=1, seed=3, config=cfg,
                                            mix_on="device"))
    assert len(host) == len(device) == 2
    for h, d in zip(host, device):
        assert set(d) == set(pipeline.DEVICE_MIX_KEYS)
        assert d["mix_seed"].shape == (8, 2) and len(set(map(tuple, d["mix_seed"].numpy()))) == 1
        assert d["u"].shape == ((32 if cfg.use_unlabeled else 0), N_SAMPLES)
        views = mixed_views(d["x"], d["y"], d["u"], cfg, d["mix_seed"][0])
        assert set(views) == set(h)
        for key in h:
            np.testing.assert_allclose(views[key].numpy(), h[key].numpy(), atol=1e-5, err_msg=key)


def test_mix_on_auto_and_validation():
    import tensorflow as tf

    assert pipeline.resolve_mix_on("auto") == ("device" if tf.config.list_logical_devices("GPU") else "host")
    assert pipeline.resolve_mix_on("device") == "device"
    with pytest.raises(ValueError, match="mix_on must be one of auto, host, device"):
        pipeline.resolve_mix_on("gpu")
    from csr.spec import RunSpec

    with pytest.raises(ValueError, match="--mix_on='gpu' is not one of auto, host, device"):
        RunSpec(mix_on="gpu")


def test_evaluation_keeps_order_and_every_clip():
    waves, labels = _tagged(70), np.arange(70) % 3
    batches = list(pipeline.evaluation_dataset(waves, labels, batch_size=32))
    assert [len(y) for _, y in batches] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate([_row_ids(x) for x, _ in batches]), np.arange(70))
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in batches]), labels)
