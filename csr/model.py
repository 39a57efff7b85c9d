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

import dataclasses
import os

import keras
import tensorflow as tf

from csr import config, distribute
from csr.augment import AugmentConfig, mixed_views
from csr.config import BACKBONES
from csr.errors import UserError
from csr.features import LogMelSpectrogram, SpectrogramToImage, frames_for
from csr.losses import global_cross_entropy, global_nt_xent
from csr.pipeline import DEVICE_MIX_KEYS  # raw clips + the step's seed: the step mixes them

MODES = ("supervised", "proposed")
VIEW_KEYS = ("s1", "s1_aug", "s2", "s2_aug")
ROW_LABEL_KEYS = ("s1_y", "s2_y")  # label of each row of s1 / s2, -1 if unlabeled (single pass)
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")


class WeightsError(UserError, ValueError):
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
    weights_file = check_weights(name, weights)
    if name == "resnet50v2":
        model = keras.applications.ResNet50V2(
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=tuple(input_shape),
            pooling="avg",
        )
    else:
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


def check_weights(backbone: str, weights) -> str | None:
    """Check a backbone's weights before anything is built: the local file's path, or None.

    "imagenet" is fetched here, once, into Keras' cache (~/.keras/models); offline, the error names
    the file Keras looks for and where, and that --weights=PATH takes a local copy.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
    if weights is None:
        return None
    if weights != "imagenet":
        return _check_weights_file(weights)
    if backbone != "resnet50v2":
        raise WeightsError(f"backbone {backbone!r} has no ImageNet weights; use weights=None or a weights file")
    _fetch_imagenet_weights()
    return None


IMAGENET_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _fetch_imagenet_weights() -> None:
    """Keras' own download of ResNet50V2's ImageNet weights (the same file, URL and hash that
    keras.applications.ResNet50V2 uses), with an error a user can act on."""
    from keras.src.applications import resnet  # the URL and hash keras.applications itself uses

    where = os.path.join(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")), "models", IMAGENET_FILE)
    try:
        keras.utils.get_file(IMAGENET_FILE, resnet.BASE_WEIGHTS_PATH + IMAGENET_FILE, cache_subdir="models",
                             file_hash=resnet.WEIGHTS_HASHES["resnet50v2"][1])
    except Exception as err:  # noqa: BLE001 - Keras raises a bare Exception for a failed download
        raise WeightsError(
            f"ImageNet weights for ResNet50V2 are not in Keras' cache and cannot be downloaded ({err}); copy "
            f"{IMAGENET_FILE} from a machine with internet to {where}, or pass --weights=PATH to a local "
            "copy") from None


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


def build_classifier_head(num_classes, hidden=config.HIDDEN_DIM):
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


def build_projection_head(dim=config.PROJECTION_DIM, hidden=config.HIDDEN_DIM):
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


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """How the train step computes Algorithm 1's loss; baked into the traced step.

    reg_weight is lambda_reg, temperature NT-Xent's; local_negatives (under a strategy) draws each
    anchor's negatives from its replica's rows only instead of the global batch; single_pass takes
    f(x_b) from the views' backbone pass (see CSRModel._single_pass_step); augment is the
    batch-split mixing the step applies when the pipeline sends raw clips (mix_on="device").
    """

    reg_weight: float = config.REG_WEIGHT
    temperature: float = config.TEMPERATURE
    local_negatives: bool = False
    single_pass: bool = False
    augment: AugmentConfig = AugmentConfig()

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"StepOptions.temperature must be positive, got {self.temperature!r}")
        if not self.reg_weight >= 0:
            raise ValueError(f"StepOptions.reg_weight must not be negative, got {self.reg_weight!r}")
        if not isinstance(self.augment, AugmentConfig):
            raise ValueError(f"StepOptions.augment must be a csr.augment.AugmentConfig, got {self.augment!r}")

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "augment": dataclasses.asdict(self.augment)}

    @classmethod
    def from_json(cls, obj: dict) -> "StepOptions":
        obj = dict(obj)
        obj["augment"] = AugmentConfig(**obj.get("augment", {}))
        return cls(**obj)


@keras.saving.register_keras_serializable(package="csr")
class CSRModel(keras.Model):
    """Front end + backbone f + classifier g_c + projector g_p, with the paper's training step.

    `mode` selects the train step: "supervised" (the warm-up of Algorithm 1, line 1, and the
    supervised baselines: cross-entropy on (x, y) batches) or "proposed" (lines 9-13 on the
    batch-split-mixed views). `mode` and `options` (StepOptions) are Python values baked into the
    traced step; `configure` is the one way to change them, and it drops the cached step so the
    change applies from the next fit call without a recompile (the optimizer keeps its state).

    Metrics reported by fit: loss, clf_loss, accuracy, and in proposed mode also reg_loss (the sum
    of the two NT-Xent terms, unweighted) and contrastive_accuracy (mean of the two views'
    in-batch accuracies). Supervised mode omits the last two rather than logging a fake 0. The
    loss metric is the raw loss, so a NaN shows up for the trainer to stop on.
    """

    def __init__(self, frontend, backbone, classifier, projector, *, mode="supervised",
                 options=StepOptions(), build_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self.frontend = frontend
        self.backbone = backbone
        self.classifier = classifier
        self.projector = projector
        # build_model's arguments, so a saved model can be rebuilt (see get_config).
        self.build_kwargs = dict(build_kwargs or {})
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.clf_loss_tracker = keras.metrics.Mean(name="clf_loss")
        self.reg_loss_tracker = keras.metrics.Mean(name="reg_loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.contrastive_accuracy_tracker = keras.metrics.Mean(name="contrastive_accuracy")
        self._mode, self._options = "supervised", StepOptions()
        self.configure(mode=mode, options=options)

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def options(self) -> StepOptions:
        return self._options

    def configure(self, mode: str | None = None, options: StepOptions | None = None, **changes):
        """Set the step's mode and options (or change some options by name) for the next fit."""
        mode = self._mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"CSRModel mode must be one of {MODES}, got {mode!r}")
        options = self._options if options is None else options
        if changes:
            options = dataclasses.replace(options, **changes)
        if not isinstance(options, StepOptions):
            raise ValueError(f"CSRModel options must be a csr.model.StepOptions, got {options!r}")
        self._mode, self._options = mode, options
        if mode == "supervised":
            self._train_step = self._supervised_step
        else:
            self._train_step = self._single_pass_step if options.single_pass else self._proposed_step
        if getattr(self, "train_function", None) is not None:
            self.train_function = None  # the traced step holds the old values; trace again
        return self

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

    # -- the networks of Algorithm 1: f, g_c . f and g_p . f --------------------------------------

    def embed(self, waves, training=False):
        """f(x): backbone features (2,048-d for ResNet50V2), float32; what `predict --embed` writes."""
        image = self.frontend(waves, training=training)
        return tf.cast(self.backbone(image, training=training), tf.float32)

    def embed_and_classify(self, waves, training=False):
        """(f(x), g_c . f(x)): backbone features and class logits, both float32 (predict, export)."""
        embedding = self.embed(waves, training=training)
        return embedding, tf.cast(self.classifier(embedding, training=training), tf.float32)

    @property
    def embedding_dim(self) -> int:
        """Size of f(x): 2,048 for ResNet50V2, 128 for the small backbone."""
        return int(self.backbone.output_shape[-1])

    def project(self, waves, training=False):
        """g_p . f(x): L2-normalised contrastive embeddings, float32."""
        return self.projector(self.embed(waves, training=training), training=training)

    def call(self, waves, training=False):
        """g_c . f(x): class logits, float32, for waveforms (batch, samples)."""
        return self.classifier(self.embed(waves, training=training), training=training)

    # -- training: Algorithm 1 --------------------------------------------------------------------

    def train_step(self, data):
        return self._train_step(data)

    def _supervised_step(self, data):
        """Warm-up (Algorithm 1, line 1) and the supervised baselines: L_clf alone updates f and g_c."""
        x_b, y_b = self._labeled_batch(data)
        with tf.GradientTape() as tape:
            logits = self(x_b, training=True)
            L_clf = self._cross_entropy(y_b, logits)
        self._optimize(tape, L_clf, self._classifier_variables())  # g_p takes no part in this loss
        self._record(L_clf, L_clf, y_b, logits)
        return distribute.keras_logs(self.metrics)

    def _proposed_step(self, data):
        """Algorithm 1, lines 9-13, on the views s1, s1~, s2, s2~ of lines 4-8 (csr.augment)."""
        x_b, y_b, s1, s1_bar, s2, s2_bar = self._joint_batch(data)
        lam = self.options.reg_weight
        with tf.GradientTape() as tape:
            logits = self(x_b, training=True)
            L_clf = self._cross_entropy(y_b, logits)                          # line 9
            z1, z1_bar, z2, z2_bar = self._project_views(s1, s1_bar, s2, s2_bar)
            L_reg_1, hits_1 = self._nt_xent(z1, z1_bar)                       # line 10
            L_reg_2, hits_2 = self._nt_xent(z2, z2_bar)                       # line 11
            loss = L_clf + lam * (L_reg_1 + L_reg_2)                          # line 12
        self._optimize(tape, loss, self.trainable_variables)                  # line 13: f, g_c, g_p
        self._record(loss, L_clf, y_b, logits, L_reg_1 + L_reg_2, 0.5 * (hits_1 + hits_2))
        return distribute.keras_logs(self.metrics)

    def _single_pass_step(self, data):
        """Lines 9-13 with one backbone pass: f(x_b) is read from the pass over the views.

        The labeled clips x_b are rows of s1 and s2 (batch-split mixing shuffles them with the
        unlabeled clips and splits them), so g_c can classify them from the features of that pass,
        saving the second pass over x_b (8 of 88 clips at the paper's batch sizes). The result
        equals `_proposed_step` whenever f treats each clip independently (BatchNorm frozen, or
        none); with training-mode BatchNorm in f the two differ: the two-pass step normalises f(x_b)
        with the statistics of the labeled batch alone, this one with those of all views.
        """
        views, row_labels = self._single_pass_batch(data)
        lam = self.options.reg_weight
        with tf.GradientTape() as tape:
            features = self.embed(tf.concat(views, axis=0), training=True)
            f_s1, f_s1_bar, f_s2, f_s2_bar = self._split_views(features, views)
            y_b, logits, labeled = self._classify_labeled_rows(f_s1, f_s2, row_labels)
            L_clf = self._cross_entropy(y_b, logits, labeled)                 # line 9
            z1, z1_bar, z2, z2_bar = self._split_views(self.projector(features, training=True), views)
            L_reg_1, hits_1 = self._nt_xent(z1, z1_bar)                       # line 10
            L_reg_2, hits_2 = self._nt_xent(z2, z2_bar)                       # line 11
            loss = L_clf + lam * (L_reg_1 + L_reg_2)                          # line 12
        self._optimize(tape, loss, self.trainable_variables)                  # line 13
        self._record(loss, L_clf, y_b, logits, L_reg_1 + L_reg_2, 0.5 * (hits_1 + hits_2),
                     weights=tf.cast(labeled, tf.float32))
        return distribute.keras_logs(self.metrics)

    def test_step(self, data):
        """Held-out (x, y): cross-entropy and accuracy, no augmentation, BN in inference mode."""
        x, y = self._labeled_batch(data)
        logits = self(x, training=False)
        self.loss_tracker.update_state(distribute.global_sum(self._cross_entropy(y, logits)))
        self.accuracy_tracker.update_state(*self._gathered(y, logits))
        return distribute.keras_logs([self.loss_tracker, self.accuracy_tracker])

    # -- the two losses of Algorithm 1, over the global batch (csr.losses) ------------------------

    def _cross_entropy(self, y, logits, labeled=None):
        """CrossEntropy(y_b, g_c . f(x_b)), the mean over the global batch (this replica's share)."""
        return global_cross_entropy(y, logits, labeled)

    def _nt_xent(self, z, z_bar):
        """NTXentLoss(z, z~) over the global batch, and its in-batch accuracy (this replica's shares)."""
        return global_nt_xent(z, z_bar, self.options.temperature, self.options.local_negatives)

    # -- bookkeeping: batches, views, the update and the metrics -----------------------------------

    def _classifier_variables(self):
        return (self.frontend.trainable_variables + self.backbone.trainable_variables
                + self.classifier.trainable_variables)

    def _optimize(self, tape, loss, variables):
        """Optimize(Loss): gradients of the global loss, loss-scaled under mixed precision and summed
        over replicas, and one optimizer update; BatchNorm statistics kept equal on every replica."""
        scale = self.optimizer.scale_loss(tf.ones_like(loss))  # 1, or the dynamic loss scale
        grads = distribute.sum_gradients(tape.gradient(loss, variables, output_gradients=scale))
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            grads = distribute.agree_on_finite(grads)
        self.optimizer.apply(grads, variables)
        distribute.average_moving_statistics(batchnorm_layers(self))

    def _record(self, loss, clf_loss, y, logits, reg_loss=None, hits=None, weights=None):
        """Update the metrics with the global batch's values: one all-reduce for every number."""
        if reg_loss is None:
            loss, clf_loss = tf.unstack(distribute.global_sum(tf.stack([loss, clf_loss])))
        else:
            loss, clf_loss, reg_loss, hits = tf.unstack(distribute.global_sum(
                tf.stack([loss, clf_loss, reg_loss, hits])))
            self.reg_loss_tracker.update_state(reg_loss)
            self.contrastive_accuracy_tracker.update_state(hits)
        self.loss_tracker.update_state(loss)
        self.clf_loss_tracker.update_state(clf_loss)
        if weights is None:  # single pass: y and logits already hold the global batch
            y, logits = self._gathered(y, logits)
        self.accuracy_tracker.update_state(y, logits, sample_weight=weights)

    @staticmethod
    def _gathered(y, logits):
        # Every replica counts the whole global batch: Keras reads a metric's first replica copy
        # at the end of an epoch, so replica-local counts would report one replica's accuracy.
        return distribute.gather_constant((_flat_labels(y), logits))

    def _project_views(self, *views):
        """g_p . f of the four views in one backbone pass (4 x 20 = 80 clips at the paper's sizes)."""
        return self._split_views(self.project(tf.concat(views, axis=0), training=True), views)

    @staticmethod
    def _split_views(stacked, views):
        sizes = tf.stack([tf.shape(v)[0] for v in views])
        return tf.split(stacked, sizes, num=len(views), axis=0)

    def _classify_labeled_rows(self, f_s1, f_s2, row_labels):
        """g_c on the original rows of s1 and s2, its BatchNorm over the labeled rows only.

        Returns (y, logits, labeled) for every row of the global batch: under a strategy the labeled
        rows may sit on other replicas, so the rows' features and labels are gathered and every
        replica applies g_c to the whole global batch. Unlabeled rows get label 0 and weight 0 in
        the loss and in BatchNorm's batch statistics (a masked BatchNorm), which keeps every shape
        static (XLA).
        """
        originals, _ = distribute.gather_rows(tf.concat([f_s1, f_s2], axis=0))
        labels = distribute.gather_constant(row_labels)
        labeled = labels >= 0
        hidden = originals
        for layer in self.classifier.layers:  # Dense-BN-ReLU-Dense
            if isinstance(layer, keras.layers.BatchNormalization):
                hidden = layer(hidden, training=True, mask=labeled)
            else:
                hidden = layer(hidden, training=True)
        y = tf.where(labeled, labels, tf.zeros_like(labels))
        return y, tf.cast(hidden, tf.float32), labeled

    def _labeled_batch(self, data):
        if isinstance(data, dict):
            raise ValueError(
                f"CSRModel expects (x, y) batches here (mode={self.mode!r}), got a dict with keys "
                f"{sorted(data)}; dict batches are for training after configure(mode='proposed')"
            )
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("CSRModel expects (x, y) batches with integer labels y")
        if sample_weight is not None:
            raise ValueError("CSRModel does not support sample_weight / class_weight (the paper uses none)")
        return x, y

    def _joint_batch(self, data):
        """(x_b, y_b, s1, s1~, s2, s2~) of a joint-training batch (mixed here if it came raw)."""
        data = self._views_batch(data, ("x", "y"))
        views = [tf.convert_to_tensor(data[k], dtype=tf.float32) for k in VIEW_KEYS]
        return (data["x"], data["y"], *views)

    def _single_pass_batch(self, data):
        """The four views and the label of each original row (-1 if unlabeled)."""
        data = self._views_batch(data, ROW_LABEL_KEYS)
        views = [tf.convert_to_tensor(data[k], dtype=tf.float32) for k in VIEW_KEYS]
        labels = tf.concat([_flat_labels(data[k]) for k in ROW_LABEL_KEYS], axis=0)
        return views, labels

    def _views_batch(self, data, needed):
        if isinstance(data, (tuple, list)) and data and isinstance(data[0], dict):
            data = data[0]  # train_on_batch(dict) arrives as (dict, None, None)
        if isinstance(data, dict) and set(DEVICE_MIX_KEYS) <= set(data) and not set(VIEW_KEYS) & set(data):
            data = self.mix_on_device(data)
        needed = tuple(needed) + VIEW_KEYS
        if not isinstance(data, dict) or not set(needed) <= set(data):
            hint = (" (single_pass needs the per-row labels s1_y, s2_y that "
                    "csr.pipeline.proposed_dataset provides)" if self.options.single_pass else "")
            raise ValueError(
                f"CSRModel in 'proposed' mode expects dict batches with keys {needed} (or {DEVICE_MIX_KEYS}, "
                f"mixed in the step), got {sorted(data) if isinstance(data, dict) else type(data)}{hint}"
            )
        return data

    def mix_on_device(self, data):
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
                           tf.convert_to_tensor(data["u"], tf.float32), self.options.augment, seed)

    # -- saving -----------------------------------------------------------------------------------

    def get_config(self):
        """The build_model arguments (not the layers): `from_config` rebuilds the same network."""
        if not self.build_kwargs:
            raise TypeError("CSRModel can only be serialised when created by build_model")
        return {**self.build_kwargs, "mode": self.mode, "options": self.options.to_json(),
                "name": self.name}

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        mode = cfg.pop("mode", "supervised")
        options = StepOptions.from_json(cfg.pop("options", {}))
        cfg.pop("name", None)
        cfg["weights"] = None  # the saved file carries the trained weights
        return build_model(**cfg).configure(mode=mode, options=options)


def _flat_labels(y):
    return tf.reshape(tf.cast(y, tf.int32), [-1])


def layers_of(model, kind) -> list:
    """Every layer of class `kind` in a model, nested models included, each once, in order."""
    found, stack, seen = [], [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, kind):
            found.append(layer)
        stack.extend(reversed(getattr(layer, "layers", [])))
    return found


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer of a model (set_bn_momentum, sync BN, replica averaging)."""
    return layers_of(model, keras.layers.BatchNormalization)


def build_model(num_classes, backbone="resnet50v2", weights="imagenet", sample_rate=config.SAMPLE_RATE,
                clip_samples=config.CLIP_SAMPLES, n_fft=config.N_FFT, hop_length=config.HOP_LENGTH,
                n_mels=config.N_MELS, f_min=config.F_MIN, f_max=config.F_MAX, scaling="minmax",
                projection_dim=config.PROJECTION_DIM, hidden_dim=config.HIDDEN_DIM, seed=None,
                bn_momentum=None):
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


def set_sync_batchnorm(model, synchronized: bool = True) -> int:
    """Switch every BatchNormalization layer to cross-replica (synchronised) batch statistics.

    With it, a training-mode BatchNorm on a replica normalises with the mean and variance of the
    global batch, so the step computes what one device computes on that batch. Keras reads the
    flag at call time, so it can be set on a built model. Returns how many layers were switched.
    """
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.synchronized = bool(synchronized)
    return len(layers)


def set_bn_momentum(model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; returns how many.

    Keras' default, 0.99, is what the paper's Keras ResNet50V2 used; with the few steps of a small
    labeled set (ESC-10 at 10%: 4 steps an epoch) the moving statistics then lag far behind the
    weights and inference-mode accuracy is meaningless early on. 0.9 (PyTorch's default) follows
    them ten times faster.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1), got {momentum}")
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.momentum = float(momentum)
    return len(layers)
