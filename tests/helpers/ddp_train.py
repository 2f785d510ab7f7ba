"""Train a tiny model with pacb_edge.training.trainer.fit; run directly (1 process) or under torchrun (DDP, gloo).

Writes the final weights (rank 0) to OUT/model.safetensors and the history to OUT/history.jsonl.
"""

import sys

import torch

from pacb_edge.data.datasets import load_dataset
from pacb_edge.models import ModelSpec, create_model
from pacb_edge.training.trainer import TrainConfig, fit

out = sys.argv[1]
torch.set_num_threads(1)
bundle = load_dataset("digits", input_size=16, limit=128)
spec = ModelSpec(
    arch="resnet56",
    attention="none",
    width_mult=0.25,
    input_size=16,
    in_chans=1,
    num_classes=10,
    dataset="digits",
    class_names=bundle.class_names,
)
torch.manual_seed(0)
model = create_model(spec.arch, **spec.model_kwargs())
cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0, augment=False, seed=0)
fit(model, bundle.train, bundle.val, spec, cfg, out, progress=False)
