"""The network of the paper (section 3.2) and its training step (Algorithm 1, lines 9-13).

waveform --log-mel front end--> (n_mels, frames, 3) image --f: backbone--> features
  features --g_c: Dense-BN-ReLU-Dense--> class logits
  features --g_p: Dense-BN-ReLU-Dense-L2 normalise--> contrastive embedding

`CSRModel.mode` selects the step: "supervised" (warm-up and the supervised baselines: cross-entropy
on (x, y) batches) or "proposed" (cross-entropy plus reg_weight times NT-Xent on the batch-split-mixed
views). The front end is part of the model so training, evaluation and `predict` all take raw
waveforms (batch, samples).

The steps run unchanged on one device or under a tf.distribute strategy (csr.distribute): each
replica returns its share of the global-batch loss, NT-Xent negatives come from every replica
unless `local_negatives`, and the logged metrics are the global batch's.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from csr import config, distribute
from csr.augment import AugmentConfig, mixed_views
from csr.features import LogMelSpectrogram, SpectrogramToImage, frames_for
from csr.losses import anchor_logits, hits_from_logits
from csr.pipeline import DEVICE_MIX_KEYS  # raw clips + the step's seed: the step mixes them

BACKBONES = ("resnet50v2", "small")
MODES = ("supervised", "proposed")
VIEW_KEYS = ("s1", "s1_aug", "s2", "s2_aug")
ROW_LABEL_KEYS = ("s1_y", "s2_y")  # label of each row of s1 / s2, -1 if unlabeled (single pass)
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")


class WeightsError(ValueError):
    """A backbone weights file is missing, in an unknown format, or does not fit the backbone."""


def build_frontend(sample_rate=config.SAMPLE_RATE, n_fft=config.N_FFT, hop_length=config.HOP_LENGTH,
                   n_mels=config.N_MELS, f_min=config.F_MIN, f_max=config.F_MAX, scaling="minmax"):
    """Waveform (batch, samples) -> backbone image (batch, n_mels, frames, 3), always in float32."""
    return keras.Sequential(
        [
            LogMelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                              f_min=f_min, f_max=f_max, top_db=config.TOP_DB, amin=config.AMIN,
                              name="log_mel"),
            SpectrogramToImage(scaling=scaling, top_db=config.TOP_DB, name="to_image"),
        ],
        name="frontend",
    )


def build_backbone(name, input_shape, weights=None):
    """The shared feature extractor f: image (n_mels, frames, 3) -> pooled feature vector.

    "resnet50v2": keras.applications.ResNet50V2 without its top, global average pooling, 2,048-d
    (the paper's network). "small": four Conv-BN-ReLU-MaxPool blocks (16-32-64-128 filters) and global
    average pooling, 128-d, for CPU demos and tests. weights: "imagenet" (resnet50v2 only; Keras
    downloads it once to ~/.keras/models), None (random init) or a local weights file.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    weights_file = None
    if weights is not None and weights != "imagenet":
        weights_file = _check_weights_file(weights)
    if name == "resnet50v2":
        model = keras.applications.ResNet50V2(
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=tuple(input_shape),
            pooling="avg",
        )
    else:
        if weights == "imagenet":
            raise ValueError("backbone 'small' has no ImageNet weights; use weights=None or a weights file")
        model = _small_cnn(input_shape)
    if weights_file is not None:
        _load_backbone_weights(model, weights_file)
    return model


def _small_cnn(input_shape):
    """A compact CNN with the same interface as the ResNet backbone (image in, pooled vector out)."""
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for i, filters in enumerate((16, 32, 64, 128)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _check_weights_file(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"backbone weights file {path!r} does not exist")
    if not path.endswith(WEIGHT_SUFFIXES):
        raise WeightsError(
            f"backbone weights file {path!r}: unsupported format; expected one of {WEIGHT_SUFFIXES} "
            "(a Keras 3 save_weights file, or a legacy Keras .h5 such as "
            "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5)"
        )
    return path


def _load_backbone_weights(model, path):
    """Load a Keras 3 (.weights.h5/.keras) or legacy (.h5) weights file, naming the file on failure.

    Keras' own message names neither the file nor the backbone; a user pointing at the wrong file
    needs both.
    """
    try:
        model.load_weights(path)
    except Exception as err:  # noqa: BLE001 - re-raised with the file and backbone named
        raise WeightsError(
            f"backbone weights file {path!r} does not fit backbone {model.name!r} "
            f"(input {model.input_shape}): {err}"
        ) from err


def build_classifier_head(num_classes, hidden=128):
    """g_c: Dense(hidden)-BN-ReLU-Dense(num_classes); float32 logits even under mixed precision."""
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return keras.Sequential(
        [
            keras.layers.Dense(hidden, name="dense"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Dense(int(num_classes), dtype="float32", name="logits"),
        ],
        name="classifier",
    )


def build_projection_head(dim=64, hidden=128):
    """g_p: Dense(hidden)-BN-ReLU-Dense(dim)-L2 normalise; float32 unit vectors for NT-Xent."""
    return keras.Sequential(
        [
            keras.layers.Dense(hidden, name="dense"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Dense(int(dim), dtype="float32", name="embedding"),
            keras.layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize"),
        ],
        name="projector",
    )


@keras.saving.register_keras_serializable(package="csr")
class CSRModel(keras.Model):
    """Front end + backbone f + classifier g_c + projector g_p, with the paper's training step.

    `mode` ("supervised" or "proposed") selects the train step; it, `reg_weight` (lambda_reg, 0.05)
    and `temperature` (NT-Xent, 0.01) are Python values baked into the traced step, and setting any
    of them drops the cached step so the change applies from the next fit/train_on_batch call, with
    no recompile (the optimizer keeps its state). Metrics reported by fit: loss, clf_loss, accuracy,
    and in proposed mode also reg_loss (the sum of the two NT-Xent terms, unweighted) and contrastive_accuracy
    (mean of the two views' in-batch accuracies). Supervised mode omits the last two rather than
    logging a fake 0. The loss metric is the raw loss, so a NaN shows up for the trainer to stop on.

    Two more step options, also baked into the trace: `local_negatives` (under a strategy, NT-Xent
    negatives from the replica's own rows only, instead of the global batch as in SimCLR) and
    `single_pass` (the proposed step takes f(x) from the backbone pass over the views instead of
    a second pass over x; see `_single_pass_forward` for when that is the same computation).
    """

    def __init__(self, frontend, backbone, classifier, projector, *, mode="supervised",
                 reg_weight=config.REG_WEIGHT, temperature=config.TEMPERATURE, build_kwargs=None,
                 local_negatives=False, single_pass=False, augment=AugmentConfig(), **kwargs):
        super().__init__(**kwargs)
        self.frontend = frontend
        self.backbone = backbone
        self.classifier = classifier
        self.projector = projector
        self.mode = mode
        self.reg_weight = reg_weight
        self.temperature = temperature
        self.local_negatives = local_negatives
        self.single_pass = single_pass
        self.augment = augment
        # build_model's arguments, so a saved model can be rebuilt (see get_config).
        self.build_kwargs = dict(build_kwargs or {})
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.clf_loss_tracker = keras.metrics.Mean(name="clf_loss")
        self.reg_loss_tracker = keras.metrics.Mean(name="reg_loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.contrastive_accuracy_tracker = keras.metrics.Mean(name="contrastive_accuracy")

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, value):
        if value not in MODES:
            raise ValueError(f"CSRModel.mode must be one of {MODES}, got {value!r}")
        self._mode = value
        self._retrace()

    @property
    def reg_weight(self):
        return self._reg_weight

    @reg_weight.setter
    def reg_weight(self, value):
        self._reg_weight = float(value)
        self._retrace()

    @property
    def temperature(self):
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        if not value > 0:
            raise ValueError(f"CSRModel.temperature must be positive, got {value!r}")
        self._temperature = float(value)
        self._retrace()

    @property
    def local_negatives(self):
        return self._local_negatives

    @local_negatives.setter
    def local_negatives(self, value):
        self._local_negatives = bool(value)
        self._retrace()

    @property
    def single_pass(self):
        return self._single_pass

    @single_pass.setter
    def single_pass(self, value):
        self._single_pass = bool(value)
        self._retrace()

    @property
    def augment(self):
        """The AugmentConfig the step mixes raw batches with (csr.pipeline mix_on="device")."""
        return self._augment

    @augment.setter
    def augment(self, value):
        if not isinstance(value, AugmentConfig):
            raise ValueError(f"CSRModel.augment must be a csr.augment.AugmentConfig, got {value!r}")
        self._augment = value
        self._retrace()

    def _retrace(self):
        # mode, reg_weight, temperature and the step options are baked into the traced train step
        # as Python values; dropping the cached function makes a change take effect without a
        # recompile.
        if getattr(self, "train_function", None) is not None:
            self.train_function = None

    def compile(self, *args, **kwargs):
        """keras.Model.compile, then build the optimizer over all trainable variables (g_p included).

        Supervised steps update only f and g_c; building the optimizer state for every variable up
        front lets the same compiled model switch to mode="proposed" (e.g. after warm-up).
        """
        super().compile(*args, **kwargs)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def input_dtype(self):
        # Waveforms enter in float32 even under mixed precision: the front end needs the precision.
        return "float32"

    @property
    def metrics(self):
        # Overridden so fit/evaluate reset exactly these each epoch (Keras' own loss tracker unused).
        tracked = [self.loss_tracker, self.clf_loss_tracker, self.accuracy_tracker]
        if self.mode == "proposed":
            tracked += [self.reg_loss_tracker, self.contrastive_accuracy_tracker]
        return tracked

    def build(self, input_shape):
        """Create every variable up front (g_p included): compile builds the optimizer from them, and
        Keras cannot infer shapes from the proposed mode's dict batches."""
        if self.built:
            return
        image = self.frontend.compute_output_shape(tuple(input_shape))
        self.frontend.build(tuple(input_shape))
        self.backbone.build(image)  # already built; records its input shape, which summary() needs
        features = self.backbone.compute_output_shape(image)
        self.classifier.build(features)
        self.projector.build(features)
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.classifier.compute_output_shape(
            self.backbone.compute_output_shape(self.frontend.compute_output_shape(input_shape)))

    def embed(self, waves, training=False):
        """Backbone features f(x) (2,048-d for ResNet50V2), float32; what `predict --embed` writes."""
        image = self.frontend(waves, training=training)
        return tf.cast(self.backbone(image, training=training), tf.float32)

    def project(self, waves, training=False):
        """L2-normalised contrastive embeddings g_p(f(x)), float32."""
        return self.projector(self.embed(waves, training=training), training=training)

    def call(self, waves, training=False):
        """Class logits g_c(f(x)), float32, for waveforms (batch, samples)."""
        return self.classifier(self.embed(waves, training=training), training=training)

    # -- training ---------------------------------------------------------------------------------

    def _classification_share(self, y, logits):
        """This replica's share of the global batch's mean cross-entropy: sum / global count."""
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=tf.cast(logits, tf.float32))
        count = distribute.global_sum(tf.cast(tf.size(y), tf.float32))
        return tf.reduce_sum(per_example) / count, y

    def _contrastive_share(self, z, z_aug):
        """This replica's shares of NT-Xent(z, z~) and of its in-batch accuracy over the global batch.

        The replica's 2n anchors are scored against the 2N embeddings of all replicas (or of its own
        rows with local_negatives) and summed, then divided by the global 2N: the shares of all
        replicas add up to nt_xent / contrastive_accuracy of the whole batch on one device.
        """
        if self.local_negatives or distribute.num_replicas() == 1:
            z_all, z_aug_all, offset = z, z_aug, 0
        else:
            dim = tf.shape(z)[1]
            both, offset = distribute.gather_rows(tf.concat([z, z_aug], axis=1))
            z_all, z_aug_all = both[:, :dim], both[:, dim:]
        logits, labels = anchor_logits(z, z_aug, z_all, z_aug_all, offset, self.temperature)
        per_anchor = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        anchors = distribute.global_sum(tf.cast(tf.size(labels), tf.float32))
        hits = hits_from_logits(tf.stop_gradient(logits), labels)
        return tf.reduce_sum(per_anchor) / anchors, tf.reduce_sum(hits) / anchors

    def _apply(self, tape, loss, variables):
        grads = distribute.sum_gradients(tape.gradient(loss, variables))
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            grads = distribute.agree_on_finite(grads)
        self.optimizer.apply(grads, variables)
        distribute.average_moving_statistics(self)

    def _labeled_batch(self, data):
        if isinstance(data, dict):
            raise ValueError(
                f"CSRModel expects (x, y) batches here (mode={self.mode!r}), got a dict with keys "
                f"{sorted(data)}; dict batches are for training with model.mode = 'proposed'"
            )
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("CSRModel expects (x, y) batches with integer labels y")
        if sample_weight is not None:
            raise ValueError("CSRModel does not support sample_weight / class_weight (the paper uses none)")
        return x, y

    def train_step(self, data):
        if self.mode == "proposed":
            return self._proposed_step(data)
        x, y = self._labeled_batch(data)
        variables = (self.frontend.trainable_variables + self.backbone.trainable_variables
                     + self.classifier.trainable_variables)  # g_p takes no part in this loss
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            share, y = self._classification_share(y, logits)
            scaled = self.optimizer.scale_loss(share)  # identity unless a LossScaleOptimizer
        self._apply(tape, scaled, variables)
        loss = distribute.global_sum(share)  # the global batch's loss, the same on every replica
        self.loss_tracker.update_state(loss)
        self.clf_loss_tracker.update_state(loss)
        self._update_accuracy(*distribute.gather_constant((y, logits)))
        return distribute.keras_logs(self.metrics)

    def _update_accuracy(self, y, logits, weights=None):
        # Every replica counts the whole global batch: Keras reads a metric's first replica copy
        # at the end of an epoch, so replica-local counts would report one replica's accuracy.
        self.accuracy_tracker.update_state(y, logits, sample_weight=weights)

    def _proposed_batch(self, data):
        if isinstance(data, (tuple, list)) and data and isinstance(data[0], dict):
            data = data[0]  # train_on_batch(dict) arrives as (dict, None, None)
        if isinstance(data, dict) and set(DEVICE_MIX_KEYS) <= set(data) and not set(VIEW_KEYS) & set(data):
            data = self._mix_on_device(data)
        needed = (("x", "y") if not self.single_pass else ROW_LABEL_KEYS) + VIEW_KEYS
        if not isinstance(data, dict) or not set(needed) <= set(data):
            hint = (" (single_pass needs the per-row labels s1_y, s2_y that "
                    "csr.pipeline.proposed_dataset provides)" if self.single_pass else "")
            raise ValueError(
                f"CSRModel in 'proposed' mode expects dict batches with keys {needed} (or {DEVICE_MIX_KEYS}, "
                f"mixed in the step), got {sorted(data) if isinstance(data, dict) else type(data)}{hint}"
            )
        return data

    def _mix_on_device(self, data):
        """Batch-split mixing inside the step (mix_on="device"): the views csr.pipeline would have
        made on the host from the same seed. Under a strategy each replica mixes the rows it holds,
        with its own seed (partners come from the replica's rows; NT-Xent negatives stay global)."""
        seed = distribute.replica_seed(tf.cast(data["mix_seed"][0], tf.int64))
        rows = data["x"].shape[0], data["u"].shape[0]
        if None not in rows and sum(rows) % 2:
            raise ValueError(
                f"mix_on=device: each replica mixes its own rows, and {rows[0]} labeled + {rows[1]} "
                f"unlabeled = {sum(rows)} is odd (batch-split mixing halves them); choose batch sizes "
                f"whose per-replica total is even, or mix on the host (--mix_on=host)")
        return mixed_views(tf.convert_to_tensor(data["x"], tf.float32), data["y"],
                           tf.convert_to_tensor(data["u"], tf.float32), self.augment, seed)

    def _proposed_step(self, data):
        """Algorithm 1 lines 9-13: L = CE(y, g_c(f(x))) + lambda * (NTXent(s1, s1~) + NTXent(s2, s2~))."""
        data = self._proposed_batch(data)
        views = [tf.convert_to_tensor(data[k], dtype=tf.float32) for k in VIEW_KEYS]
        n1 = tf.shape(views[0])[0]
        n2 = tf.shape(views[2])[0]
        with tf.GradientTape() as tape:
            if self.single_pass:  # y, logits of the global batch's rows, weight 0 if unlabeled
                clf_share, y, logits, weights, z = self._single_pass_forward(data, views, n1, n2)
            else:
                logits = self(data["x"], training=True)
                clf_share, y = self._classification_share(data["y"], logits)
                y, logits = distribute.gather_constant((y, logits))
                weights = None
                # One backbone pass over all four views (4 x 20 = 80 clips at the paper's batch sizes).
                z = self.project(tf.concat(views, axis=0), training=True)
            z1, z1_aug, z2, z2_aug = tf.split(z, tf.stack([n1, n1, n2, n2]), num=4, axis=0)
            reg1, hits1 = self._contrastive_share(z1, z1_aug)
            reg2, hits2 = self._contrastive_share(z2, z2_aug)
            reg_share = reg1 + reg2
            share = clf_share + self.reg_weight * reg_share
            scaled = self.optimizer.scale_loss(share)
        self._apply(tape, scaled, self.trainable_variables)
        # One all-reduce for every logged number: the global batch's values on every replica.
        loss, clf_loss, reg_loss, hits = tf.unstack(distribute.global_sum(
            tf.stack([share, clf_share, reg_share, 0.5 * (hits1 + hits2)])))
        self.loss_tracker.update_state(loss)
        self.clf_loss_tracker.update_state(clf_loss)
        self.reg_loss_tracker.update_state(reg_loss)
        self._update_accuracy(y, logits, weights)
        self.contrastive_accuracy_tracker.update_state(hits)
        return distribute.keras_logs(self.metrics)

    def _single_pass_forward(self, data, views, n1, n2):
        """f(x) taken from the views' backbone pass: (clf share, y, logits, weights, z), one pass not two.

        The labeled clips x are rows of s1 and s2 (batch_split_mix shuffles x with the unlabeled
        clips and splits them), so g_c can read their features from the pass over the four views,
        saving the second backbone pass over x (8 of 88 clips at the paper's batch sizes). The
        labeled rows are those with s1_y / s2_y >= 0. g_c runs on all original rows with weight 1
        for labeled rows and 0 for the others, in the cross-entropy and in its BatchNorm's batch
        statistics (a masked BatchNorm), which keeps every shape static (XLA) and makes unlabeled
        rows contribute nothing. Under a strategy the labeled rows may sit on other replicas, so
        the original rows' features and labels are gathered and every replica applies g_c to the
        whole global batch (its share is 1/replicas of that loss).

        The result equals the two-pass step whenever f treats each clip independently: BatchNorm in
        inference mode (frozen) or no BatchNorm. With training-mode BatchNorm in f the two differ:
        the two-pass step normalises f(x) with the statistics of the labeled batch alone, this one
        with the statistics of all views. g_c and the cross-entropy see the same labeled rows
        either way (in another order, which neither a mean nor batch statistics depend on).
        """
        features = self.embed(tf.concat(views, axis=0), training=True)
        z = self.projector(features, training=True)
        f1, _, f2, _ = tf.split(features, tf.stack([n1, n1, n2, n2]), num=4, axis=0)
        originals, _ = distribute.gather_rows(tf.concat([f1, f2], axis=0))
        row_labels = distribute.gather_constant(tf.concat(
            [tf.reshape(tf.cast(data[k], tf.int32), [-1]) for k in ROW_LABEL_KEYS], axis=0))
        labeled = row_labels >= 0
        weights = tf.cast(labeled, tf.float32)
        y = tf.where(labeled, row_labels, tf.zeros_like(row_labels))
        hidden = originals
        for layer in self.classifier.layers:  # Dense-BN-ReLU-Dense, the BN over labeled rows only
            if isinstance(layer, keras.layers.BatchNormalization):
                hidden = layer(hidden, training=True, mask=labeled)
            else:
                hidden = layer(hidden, training=True)
        logits = tf.cast(hidden, tf.float32)
        per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        clf_loss = tf.reduce_sum(weights * per_row) / tf.reduce_sum(weights)
        share = clf_loss / float(distribute.num_replicas())
        return share, y, logits, weights, z

    def test_step(self, data):
        """Held-out (x, y): cross-entropy and accuracy, no augmentation, BN in inference mode."""
        x, y = self._labeled_batch(data)
        logits = self(x, training=False)
        share, y = self._classification_share(y, logits)
        self.loss_tracker.update_state(distribute.global_sum(share))
        self._update_accuracy(*distribute.gather_constant((y, logits)))
        return distribute.keras_logs([self.loss_tracker, self.accuracy_tracker])

    # -- saving -----------------------------------------------------------------------------------

    def get_config(self):
        """The build_model arguments (not the layers): `from_config` rebuilds the same network."""
        if not self.build_kwargs:
            raise TypeError("CSRModel can only be serialised when created by build_model")
        return {**self.build_kwargs, "mode": self.mode, "reg_weight": self.reg_weight,
                "temperature": self.temperature, "name": self.name}

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        mode = cfg.pop("mode", "supervised")
        reg_weight = cfg.pop("reg_weight", config.REG_WEIGHT)
        temperature = cfg.pop("temperature", config.TEMPERATURE)
        cfg.pop("name", None)
        cfg["weights"] = None  # the saved file carries the trained weights
        model = build_model(**cfg)
        model.mode, model.reg_weight, model.temperature = mode, reg_weight, temperature
        return model


def build_model(num_classes, backbone="resnet50v2", weights="imagenet", sample_rate=config.SAMPLE_RATE,
                clip_samples=config.CLIP_SAMPLES, n_fft=config.N_FFT, hop_length=config.HOP_LENGTH,
                n_mels=config.N_MELS, f_min=config.F_MIN, f_max=config.F_MAX, scaling="minmax",
                projection_dim=64, hidden_dim=128, seed=None, bn_momentum=None):
    """The paper's network for `num_classes` classes, built and ready to compile.

    The backbone input is (n_mels, 1 + clip_samples // hop_length, 3) = (128, 480, 3) at the paper's
    settings. seed (int) makes the random initialisation of every layer reproducible; it seeds the
    global Python, NumPy and TF generators through keras.utils.set_random_seed.
    """
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    build_kwargs = dict(num_classes=int(num_classes), backbone=backbone, sample_rate=sample_rate,
                        clip_samples=int(clip_samples), n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                        f_min=f_min, f_max=f_max, scaling=scaling, projection_dim=projection_dim,
                        hidden_dim=hidden_dim, bn_momentum=bn_momentum)
    frontend = build_frontend(sample_rate, n_fft, hop_length, n_mels, f_min, f_max, scaling)
    image_shape = (int(n_mels), frames_for(clip_samples, hop_length), 3)
    model = CSRModel(
        frontend=frontend,
        backbone=build_backbone(backbone, image_shape, weights),
        classifier=build_classifier_head(num_classes, hidden_dim),
        projector=build_projection_head(projection_dim, hidden_dim),
        build_kwargs=build_kwargs,
        name="csr_model",
    )
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
    model.build((None, int(clip_samples)))
    return model


def set_bn_momentum(model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; returns how many.

    Keras' default, 0.99, is what the paper's Keras ResNet50V2 used; with the few steps of a small
    labeled set (ESC-10 at 10%: 4 steps an epoch) the moving statistics then lag far behind the
    weights and inference-mode accuracy is meaningless early on. 0.9 (PyTorch's default) follows
    them ten times faster.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1), got {momentum}")
    layers = [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = float(momentum)
    return len(layers)
