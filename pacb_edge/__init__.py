"""pacb-edge: attention-guided channel pruning from training to measured edge deployment."""

__version__ = "0.1.0"
