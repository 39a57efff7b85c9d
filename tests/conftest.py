"""Test isolation for process-wide TensorFlow state."""
import sys

import pytest


@pytest.fixture(autouse=True)
def _op_determinism_off_after_each_test():
    """A run enables op determinism for the whole process (csr.train.seed_run); XLA's CPU MaxPoolGrad
    refuses it. Each test starts with it off, whatever ran before it in this process (pytest-xdist
    hands files to workers in no fixed order)."""
    yield
    if "tensorflow" in sys.modules:
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()
