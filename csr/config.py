"""The paper's fixed numbers in one place, so every module agrees on them (DESIGN.md, 'the method')."""

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

MIX_SNR_DB = (-5.0, 20.0)
NOISE_SNR_DB = (0.0, 6.0)
NOISE_COLORS = ("white", "pink", "brown", "blue", "violet", "grey")
# Where batch-split mixing runs (csr.pipeline): auto = on the device when a GPU is visible.
MIX_ON = ("auto", "host", "device")

TEMPERATURE = 0.01
REG_WEIGHT = 0.05
LABELED_BATCH = 8
UNLABELED_BATCH = 32
