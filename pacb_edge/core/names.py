"""The names the command line offers, without importing torch (so `pacb-edge --help` stays fast). Each tuple is
checked against the registry it names in tests/test_cli.py: a module registered without its name here fails there."""

ATTENTION_NAMES = ("ca", "sca", "se", "cbam", "eca", "sge", "lam")  # pacb_edge.models.list_attentions()
CRITERION_NAMES = ("bn-scale", "sca-attention", "se-attention", "l1-norm", "random")  # pruning.pruner.CRITERIA
DATASET_NAMES = ("digits", "cifar10", "cifar100", "fashion-mnist", "gtsrb")  # data.datasets, besides imagefolder:PATH


def listed(names: tuple[str, ...], last: str = "or") -> str:
    """`a, b, c or d`."""
    return ", ".join(names[:-1]) + f" {last} {names[-1]}" if len(names) > 1 else "".join(names)
