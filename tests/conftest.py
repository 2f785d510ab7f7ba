import os

import pytest
from sshd_fixture import sshd  # noqa: F401 - the real-sshd fixture of the Jetson tests

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state, so a failure reproduces."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core test dependency
        yield
        return
    torch.manual_seed(0)
    yield


def fit_adam(model, batch, steps: int, lr: float = 1e-2):
    """Train `model` with Adam on `steps` batches drawn by `batch()` (x, y), then put it in eval mode."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        x, y = batch()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _train_tiny_run(out, model="mobilenetv3_small", attention="ca", prune="bn-scale"):
    from pacb_edge.pruning.pruner import PruneConfig
    from pacb_edge.studies.pipeline import RunOptions, run_pipeline
    from pacb_edge.training.trainer import TrainConfig

    opts = RunOptions(
        model=model,
        attention=attention,
        dataset="digits",
        input_size=32,
        width_mult=0.5,
        grayscale_to_rgb=True,
        limit=None,
        out=out,
        progress=False,
        command="pytest tiny run",
        train=TrainConfig(epochs=5, batch_size=32, lr=0.1, warmup_epochs=1, sparsity=1e-4),
        finetune=TrainConfig(epochs=2, batch_size=32, lr=0.02, warmup_epochs=0),
        prune=PruneConfig(criterion=prune, prune_ratio=0.4),
    )
    run_pipeline(opts)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained, pruned and fine-tuned MobileNetV3-Small-CA on digits (3 channels, 32x32): base/ and pruned/."""
    return _train_tiny_run(tmp_path_factory.mktemp("tiny_run"))
