"""absl flags that run_fold.py and run_experiment.py share: where the data is, and how to run.

One definition, so the two scripts cannot drift apart: run_experiment.py forwards these flags to
every run_fold.py it starts.
"""

from absl import flags

from csr.config import MIX_ON


def define_data_flags() -> None:
    """--data_root, --esc50_root, --us8k_root, --cache_dir, --download."""
    flags.DEFINE_string("data_root", "data/datasets",
                        "Folder holding ESC-50/ and UrbanSound8K/ (downloaded if missing).")
    flags.DEFINE_string("esc50_root", None, "Override: a folder in ESC-50's layout (meta/esc50.csv, audio/).")
    flags.DEFINE_string("us8k_root", None, "Override: a folder in UrbanSound8K's layout.")
    flags.DEFINE_string("cache_dir", None, "Waveform cache folder (default: <data_root>/cache).")
    flags.DEFINE_bool("download", True, "Download a missing dataset into --data_root before training.")


def define_execution_flags() -> None:
    """How a run executes (csr.runner.EXECUTION_OPTIONS): not part of the run id."""
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multiworker"],
                      "default: one device; mirrored: all local GPUs, the global batch split across them "
                      "(add --sync_bn); multiworker: several machines described by TF_CONFIG.")
    flags.DEFINE_bool("mixed_precision", False,
                      "mixed_float16 with dynamic loss scaling; front end, logits, similarities and losses "
                      "stay float32.")
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the train and test steps (one device only).")
    flags.DEFINE_bool("sync_bn", False,
                      "BatchNorm statistics over the global batch instead of each replica's slice.")
    flags.DEFINE_bool("local_negatives", False,
                      "Under a strategy, NT-Xent negatives from the replica's own rows only "
                      "(default: all replicas').")
    flags.DEFINE_bool("single_pass", False,
                      "Classify the labeled clips from the views' backbone pass instead of a second pass "
                      "over x (~9% fewer backbone FLOPs; BatchNorm statistics then come from all views).")
    flags.DEFINE_enum("mix_on", "auto", list(MIX_ON),
                      "Where batch-split mixing runs: host (tf.data map), device (inside the train step, "
                      "on the GPU; the host then only gathers clips), auto (device when a GPU is "
                      "visible). Same seeds, same batches either way.")
