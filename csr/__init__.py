"""csr: cross-domain semi-supervised audio event classification with contrastive regularization.

A TensorFlow/Keras reproduction of Lee & Lee. Modules are small and single-purpose; see
docs/architecture.md for the data flow. Importing the package is cheap: TensorFlow is only imported by the
modules that need it.
"""

__version__ = "0.1.0"
