"""One description of a run: `RunSpec`, the single source of every setting a run can have.

A run is one method on one fold of one data set, trained with one schedule. Everything that decides
what it computes, and how it executes, is a field of `RunSpec`, with the paper's value as default
(csr.config). Everything else is derived from it:

  - the command-line flags of reproduce/run_fold.py and run_experiment.py (csr.cli.spec_flags generates
    them from these fields, their help texts, choices and defaults);
  - a profile (csr.experiments) is a set of overrides of these fields;
  - the network (`model_settings`), the training phases (`phases`), the augmentation
    (`augment_config`) and the train step's options (`step_options`);
  - the run's folder name (`run_id`) and config.json (`to_json`).

Fields come in groups (`group` in each field's metadata): "run" (what is run), "network",
"schedule", "regularization" (the contrastive term's knobs) and "execution" (how the run is
executed: the same computation on other hardware; not part of the run's identity).
A spec checks itself on construction: a bad value is refused before any data loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from csr import config as C
from csr.errors import UserError

GROUPS = ("run", "network", "schedule", "regularization", "execution")
# Execution options that run the same computation another way (other hardware, precision, where the
# mixing runs): not part of a run's identity, so a run may resume with other ones.
SAME_COMPUTATION = ("strategy", "mixed_precision", "jit_compile", "sync_bn", "local_negatives", "mix_on")
# Settings a method never reads.
_UNUSED = {
    "supervised": ("warmup_epochs", "joint_epochs", "warmup_lr", "joint_lr", "unlabeled_batch", "reg_weight",
                   "temperature", "mix_snr_db", "noise_snr_db", "noise_colors", "projection_dim", "single_pass"),
    "proposed": ("supervised_epochs", "supervised_lr"),
}
# Identity settings spelled out in a run id when they differ from the paper's (the rest become a hash).
_ID_TOKENS = {"temperature": "tau", "reg_weight": "lambda"}


class SpecError(UserError, ValueError):
    """A setting that cannot describe a run; the message names the flag and what would work."""


def _field(default, help: str, group: str, choices=None):  # noqa: A002 - the flag's help text
    assert group in GROUPS, group
    return field(default=default, metadata={"help": help, "group": group, "choices": choices})


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with one training mode and one Adam learning rate."""

    name: str  # "warmup", "joint" or "supervised"
    mode: str  # CSRModel mode: "supervised" or "proposed"
    epochs: int
    learning_rate: float


@dataclass(frozen=True)
class RunSpec:
    """Every setting of one run; defaults are the paper's."""

    # -- what is run ------------------------------------------------------------------------------
    experiment: str = _field("custom", "Which experiment the run belongs to (its results subfolder).",
                             "run", C.EXPERIMENTS)
    method: str = _field("proposed", "supervised (random init), supervised_imagenet, proposed, "
                         "no_mixing (-Mixing ablation), no_unlabeled (-Unlabeled ablation).", "run", C.METHODS)
    target: str = _field("esc10", "Labeled data: esc10, esc50, us8k, or a CSV of path,label[,fold].", "run")
    unlabeled: str = _field("esc40", "Unlabeled data: esc40, esc50, us8k, none, or a folder of audio.", "run")
    fraction: float = _field(1.0, "Fraction of each class's training clips that keep their label.", "run")
    fold: int = _field(1, "Held-out test fold (ESC: 1-5, UrbanSound8K: 1-10).", "run")
    seed: int = _field(0, "Seed of the label fraction, initialisation, batches and augmentation.", "run")
    # -- the network ------------------------------------------------------------------------------
    backbone: str = _field("resnet50v2", "Feature extractor f: resnet50v2 (the paper's) or small (a CPU "
                           "check).", "network", C.BACKBONES)
    weights: str | None = _field("imagenet", "Backbone initialisation for every method but `supervised`: "
                                 "imagenet, none (random), or a local weights file.", "network")
    sample_rate: int = _field(C.SAMPLE_RATE, "Sample rate the clips are resampled to (Hz).", "network")
    clip_samples: int = _field(C.CLIP_SAMPLES, "Clip length in samples (5 s at the sample rate).", "network")
    n_fft: int = _field(C.N_FFT, "STFT size.", "network")
    hop_length: int = _field(C.HOP_LENGTH, "STFT hop (the paper's 230 gives 480 frames).", "network")
    n_mels: int = _field(C.N_MELS, "Mel bins.", "network")
    f_min: float = _field(C.F_MIN, "Lowest mel frequency (Hz).", "network")
    f_max: float = _field(C.F_MAX, "Highest mel frequency (Hz).", "network")
    bn_momentum: float | None = _field(None, "BatchNorm moving-average momentum of every layer (default: "
                                       "Keras' 0.99).", "network")
    projection_dim: int = _field(C.PROJECTION_DIM, "Size of g_p's L2-normalised embedding.", "network")
    # -- the schedule -----------------------------------------------------------------------------
    warmup_epochs: int | None = _field(None, "Warm-up epochs (default: the paper's 20, 10 for us8k).",
                                       "schedule")
    joint_epochs: int = _field(C.JOINT_EPOCHS, "Joint-training epochs.", "schedule")
    supervised_epochs: int = _field(C.SUPERVISED_EPOCHS, "Epochs of the supervised baselines.", "schedule")
    warmup_lr: float = _field(C.WARMUP_LR, "Adam learning rate of the warm-up.", "schedule")
    joint_lr: float = _field(C.JOINT_LR, "Adam learning rate of joint training.", "schedule")
    supervised_lr: float = _field(C.SUPERVISED_LR, "Adam learning rate of the supervised baselines.",
                                  "schedule")
    labeled_batch: int = _field(C.LABELED_BATCH, "Labeled clips per step.", "schedule")
    unlabeled_batch: int = _field(C.UNLABELED_BATCH, "Unlabeled clips per joint step.", "schedule")
    eval_batch: int = _field(C.EVAL_BATCH, "Clips per evaluation batch.", "schedule")
    last_k: int = _field(C.LAST_EPOCHS, "*last* = mean test accuracy of this many final epochs.", "schedule")
    # -- the contrastive regularisation ----------------------------------------------------------
    reg_weight: float = _field(C.REG_WEIGHT, "lambda_reg, the weight of the NT-Xent terms.", "regularization")
    temperature: float = _field(C.TEMPERATURE, "NT-Xent temperature.", "regularization")
    mix_snr_db: tuple = _field(C.MIX_SNR_DB, "Range LOW,HIGH (dB) of the mixing SNR, drawn per row.",
                               "regularization")
    noise_snr_db: tuple = _field(C.NOISE_SNR_DB, "Range LOW,HIGH (dB) of the added noise's SNR.",
                                 "regularization")
    noise_colors: tuple = _field(C.NOISE_COLORS, "Colours the added noise is drawn from.", "regularization",
                                 C.NOISE_COLORS)
    # -- how the run executes (not part of its identity) -----------------------------------------
    strategy: str = _field("default", "default: one device; mirrored: all local GPUs, the global batch split "
                           "across them; multiworker: several machines described by TF_CONFIG.", "execution",
                           C.STRATEGIES)
    mixed_precision: bool = _field(False, "mixed_float16 with dynamic loss scaling; front end, logits, "
                                   "similarities and losses stay float32.", "execution")
    jit_compile: bool = _field(False, "XLA-compile the train and test steps (one device only).", "execution")
    sync_bn: bool = _field(False, "BatchNorm statistics over the global batch instead of each replica's "
                           "slice.", "execution")
    local_negatives: bool = _field(False, "Under a strategy, NT-Xent negatives from the replica's own rows "
                                   "only (default: all replicas').", "execution")
    single_pass: bool = _field(False, "Classify the labeled clips from the views' backbone pass instead of "
                               "a second pass over x (~9% fewer backbone FLOPs; BatchNorm statistics then "
                               "come from all views).", "execution")
    mix_on: str = _field("auto", "Where batch-split mixing runs: host (tf.data map), device (inside the "
                         "train step; the host only gathers clips), auto (device when a GPU is visible). "
                         "Same seeds, same batches either way.", "execution", C.MIX_ON)

    def __post_init__(self):
        for name, value in (("mix_snr_db", self.mix_snr_db), ("noise_snr_db", self.noise_snr_db)):
            object.__setattr__(self, name, _snr_range(name, value))
        object.__setattr__(self, "noise_colors", tuple(self.noise_colors))
        if isinstance(self.weights, str) and self.weights.lower() == "none":
            object.__setattr__(self, "weights", None)
        _check(self)

    # -- derived settings -------------------------------------------------------------------------
    @property
    def is_supervised(self) -> bool:
        return self.method in C.SUPERVISED_METHODS

    @property
    def backbone_weights(self) -> str | None:
        """The weights the backbone starts from: random for the `supervised` baseline."""
        return None if self.method == "supervised" else self.weights

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.sample_rate

    def model_settings(self) -> dict:
        """csr.model.build_model's keyword arguments (besides num_classes)."""
        return dict(backbone=self.backbone, weights=self.backbone_weights, sample_rate=self.sample_rate,
                    clip_samples=self.clip_samples, n_fft=self.n_fft, hop_length=self.hop_length,
                    n_mels=self.n_mels, f_min=self.f_min, f_max=self.f_max,
                    projection_dim=self.projection_dim, bn_momentum=self.bn_momentum, seed=self.seed)

    def identity(self) -> dict:
        """The settings that decide what the run computes, resolved (the weights it really starts
        from, the warm-up length of its target), without the ones its method never reads and the
        execution options (SAME_COMPUTATION) that compute the same thing another way."""
        unused = _UNUSED["supervised" if self.is_supervised else "proposed"]
        ignored = {"experiment", *SAME_COMPUTATION, *unused}
        out = {k: v for k, v in self.to_json().items() if k not in ignored}
        # A CSV or a folder is identified by its content (config.json's data identity), not its path.
        out["target"] = self.target if self.target in C.TARGETS else "a CSV file"
        out["unlabeled"] = self.unlabeled if self.unlabeled in C.UNLABELED else "a folder"
        out["weights"] = self.backbone_weights
        if "warmup_epochs" in out:
            out["warmup_epochs"] = self.phases()[0].epochs if len(self.phases()) > 1 else 0
        return out

    def phases(self) -> list[Phase]:
        """Warm-up then joint training (Algorithm 1), or the baselines' single supervised phase."""
        if self.is_supervised:
            return [Phase("supervised", "supervised", self.supervised_epochs, self.supervised_lr)]
        warmup = self.warmup_epochs
        if warmup is None:
            warmup = C.WARMUP_EPOCHS_US8K if self.target == "us8k" else C.WARMUP_EPOCHS
        phases = [Phase("warmup", "supervised", warmup, self.warmup_lr)] if warmup > 0 else []
        return phases + [Phase("joint", "proposed", self.joint_epochs, self.joint_lr)]

    def phase_of(self, epoch: int) -> Phase:
        """The phase that global epoch `epoch` belongs to."""
        end = 0
        for phase in self.phases():
            end += phase.epochs
            if epoch < end:
                return phase
        raise ValueError(f"epoch {epoch} is past the run's {end} epochs")

    def augment_config(self):
        """Batch-split mixing's settings (csr.augment), with the ablations' switches."""
        from csr.augment import AugmentConfig

        return AugmentConfig(mix_snr_db=self.mix_snr_db, noise_snr_db=self.noise_snr_db,
                             colors=self.noise_colors, mixing=self.method != "no_mixing",
                             use_unlabeled=self.method != "no_unlabeled")

    def step_options(self):
        """The train step's options (csr.model.StepOptions)."""
        from csr.model import StepOptions

        return StepOptions(reg_weight=self.reg_weight, temperature=self.temperature,
                           local_negatives=self.local_negatives, single_pass=self.single_pass,
                           augment=self.augment_config())

    # -- naming and saving ------------------------------------------------------------------------
    def run_id(self) -> str:
        """The run's folder name under <out_dir>/<experiment>/: unique to what the run computes.

        `<target>-<unlabeled>-<method>-frac<f>-fold<k>-seed<s>`, then, for each setting that differs
        from the paper's, either a readable token (tau<temperature>, lambda<reg_weight>) or, for all
        the others together, h<8 hex digits of their hash>. A run at the paper's settings keeps the
        plain name; two runs that compute different things never share a folder.
        """
        tokens = [self.legacy_run_id()]
        paper = RunSpec(**{k: getattr(self, k) for k in fields_of("run")}).identity()
        changed = {k: v for k, v in self.identity().items() if v != paper[k]}
        for name, token in _ID_TOKENS.items():
            if name in changed:
                tokens.append(f"{token}{changed.pop(name):g}")
        if changed:
            text = json.dumps(changed, sort_keys=True, separators=(",", ":"))
            tokens.append("h" + hashlib.blake2b(text.encode(), digest_size=4).hexdigest())
        return "-".join(tokens)

    def legacy_run_id(self) -> str:
        """The readable part of the run id: what csr named every run folder before ids were unique."""
        target = Path(self.target).stem if self.target.endswith(".csv") else self.target
        unlabeled = self.unlabeled if self.unlabeled in C.UNLABELED else Path(self.unlabeled).name
        return (f"{target}-{unlabeled}-{self.method}-frac{self.fraction:g}-fold{self.fold}"
                f"-seed{self.seed}")

    def to_json(self) -> dict:
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_json(cls, obj: dict) -> "RunSpec":
        """The spec written by `to_json` (missing fields take their defaults)."""
        unknown = sorted(set(obj) - set(FIELDS))
        if unknown:
            raise SpecError(f"unknown run setting(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in obj.items()})

    def replace(self, **changes) -> "RunSpec":
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise SpecError(f"unknown run setting(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


def fields_of(*groups: str) -> list[str]:
    """Names of the fields in the given groups, in declaration order."""
    return [name for name, f in FIELDS.items() if f.metadata["group"] in groups]


def _snr_range(name, value) -> tuple:
    if isinstance(value, str):
        value = value.split(",")
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SpecError(f"--{name} must be two numbers LOW,HIGH (dB), got {value!r}") from None
    if low > high:
        raise SpecError(f"--{name}: LOW must not exceed HIGH, got {low:g},{high:g}")
    return (low, high)


def _check(spec: RunSpec) -> None:
    """Refuse values no run can have, naming the flag."""
    for name, f in FIELDS.items():
        choices = f.metadata["choices"]
        value = getattr(spec, name)
        if choices and name != "noise_colors" and value not in choices:
            raise SpecError(f"--{name}={value!r} is not one of {', '.join(choices)}")
    unknown = [c for c in spec.noise_colors if c not in C.NOISE_COLORS]
    if not spec.noise_colors or unknown:
        raise SpecError(f"--noise_colors must be one or more of {', '.join(C.NOISE_COLORS)}; "
                        f"got {','.join(spec.noise_colors) or 'none'}")
    if not 0 < spec.fraction <= 1:
        raise SpecError(f"--fraction must be in (0, 1], got {spec.fraction}")
    positive = ("fold", "sample_rate", "clip_samples", "n_fft", "hop_length", "n_mels", "projection_dim",
                "joint_epochs", "supervised_epochs", "warmup_lr", "joint_lr", "supervised_lr",
                "labeled_batch", "unlabeled_batch", "eval_batch", "last_k", "temperature")
    for name in positive:
        if not getattr(spec, name) > 0:
            raise SpecError(f"--{name} must be positive, got {getattr(spec, name)}")
    for name in ("seed", "warmup_epochs", "reg_weight"):
        value = getattr(spec, name)
        if value is not None and value < 0:
            raise SpecError(f"--{name} must not be negative, got {value}")
    if not 0 <= spec.f_min < spec.f_max <= spec.sample_rate / 2:
        raise SpecError(f"--f_min/--f_max must satisfy 0 <= f_min < f_max <= sample_rate / 2, got "
                        f"{spec.f_min:g}, {spec.f_max:g} at {spec.sample_rate} Hz")
    if spec.bn_momentum is not None and not 0 <= spec.bn_momentum < 1:
        raise SpecError(f"--bn_momentum must be in [0, 1), got {spec.bn_momentum}")
    if spec.backbone == "small" and spec.backbone_weights == "imagenet":
        raise SpecError("--backbone=small has no ImageNet weights; pass --weights=none (random "
                        "initialisation) or a weights file")
    _check_data(spec.method, spec.target, spec.unlabeled)


def _check_data(method: str, target: str, unlabeled: str) -> None:
    """Refuse data combinations that cannot be what the user meant, saying what would work."""
    if method in C.SUPERVISED_METHODS and unlabeled != "none":
        raise SpecError(f"--method={method} trains on labeled data only; pass --unlabeled=none, "
                        "or use --method=proposed to use unlabeled data")
    if method == "no_unlabeled" and unlabeled != "none":
        raise SpecError("--method=no_unlabeled is the -Unlabeled ablation (contrastive term on the "
                        "labeled batch alone); pass --unlabeled=none")
    if method in ("proposed", "no_mixing") and unlabeled == "none":
        raise SpecError(f"--method={method} needs unlabeled data (--unlabeled=esc40|esc50|us8k|FOLDER); "
                        "for the contrastive term on labeled data alone use --method=no_unlabeled")
    overlapping = {("esc10", "esc50"), ("esc50", "esc40"), ("esc50", "esc50"), ("us8k", "us8k")}
    if (target, unlabeled) in overlapping:
        raise SpecError(f"--unlabeled={unlabeled} contains the clips of --target={target}, test folds "
                        "included; use disjoint data (esc10 with esc40; esc50 with us8k; us8k with esc50)")


FIELDS = {f.name: f for f in dataclasses.fields(RunSpec)}
