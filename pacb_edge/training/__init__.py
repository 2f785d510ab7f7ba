"""Training: the trainer, the recipes per input size, and checkpoints (safetensors + spec)."""
