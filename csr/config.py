"""The paper's fixed numbers and the project's choice lists, each defined once (docs/method.md).

Every module, flag and test takes these from here: a default, a range or a list of choices is never
spelled a second time.
"""

# -- the clip and the log-mel front end (paper 3.2, 3.4) --------------------------------------------
SAMPLE_RATE = 22_050  # the paper's "22,500" is a typo: only 22,050 Hz gives 480 frames
CLIP_SECONDS = 5.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)  # 110,250

N_FFT = 1024
HOP_LENGTH = 230
N_MELS = 128
F_MIN = 50.0
F_MAX = 10_000.0
TOP_DB = 80.0
AMIN = 1e-10
NUM_FRAMES = 1 + CLIP_SAMPLES // HOP_LENGTH  # 480 with centred framing

# -- the heads (paper 3.2) ------------------------------------------------------------------------
HIDDEN_DIM = 128  # Dense-BN-ReLU width of g_c and g_p
PROJECTION_DIM = 64  # g_p's L2-normalised embedding

# -- batch-split mixing (paper 2.2) ---------------------------------------------------------------
MIX_SNR_DB = (-5.0, 20.0)
NOISE_SNR_DB = (0.0, 6.0)
NOISE_COLORS = ("white", "pink", "brown", "blue", "violet", "grey")

# -- the loss and the schedule (paper 2.1, 3.4) ---------------------------------------------------
TEMPERATURE = 0.01
REG_WEIGHT = 0.05
LABELED_BATCH = 8
UNLABELED_BATCH = 32
EVAL_BATCH = 32
WARMUP_EPOCHS = 20  # ESC-10 / ESC-50
WARMUP_EPOCHS_US8K = 10
JOINT_EPOCHS = 100
SUPERVISED_EPOCHS = 200
WARMUP_LR = 1e-4
JOINT_LR = 1e-5
SUPERVISED_LR = 1e-4
LAST_EPOCHS = 20  # *last* = mean test accuracy of the last 20 epochs (Table 1)

# -- choice lists ---------------------------------------------------------------------------------
METHODS = ("supervised", "supervised_imagenet", "proposed", "no_mixing", "no_unlabeled")
SUPERVISED_METHODS = ("supervised", "supervised_imagenet")
BACKBONES = ("resnet50v2", "small")
TARGETS = ("esc10", "esc50", "us8k")  # or a CSV of path,label[,fold]
UNLABELED = ("esc40", "esc50", "us8k", "none")  # or a folder of audio
EXPERIMENTS = ("table1", "table2", "ablation", "sensitivity", "custom", "demo")
STRATEGIES = ("default", "mirrored", "multiworker")  # csr.distribute
MIX_ON = ("auto", "host", "device")  # where batch-split mixing runs (csr.pipeline)
EXPORT_FORMATS = ("saved_model", "tflite")  # what csr.export writes
EXPORT_QUANTIZE = ("none", "dynamic")  # TFLite quantisation (csr.export)
