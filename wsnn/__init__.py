"""wsnn: weakly-supervised neural network for image annotation and tag refinement."""

__version__ = "0.1.0"
