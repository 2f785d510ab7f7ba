"""The `pacb-edge` command line. Thin: it parses options and calls library functions.

Heavy libraries (torch, tensorflow, onnxruntime, tensorrt) are imported inside the commands, never at module level,
so `pacb-edge --help` stays fast; tests/test_lazy_imports.py enforces it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from pacb_edge.cli import output as view
from pacb_edge.cli.options import (
    MIN_INPUT_SIZE,
    bench_device_options,
    reproduce_config,
    run_options,
    split_csv,
    ssh_options,
)
from pacb_edge.cli.output import print_table
from pacb_edge.cli.params import (
    BENCH_ANDROID,
    BENCH_JETSON,
    EXPORT_JETSON,
    PROFILE_ANDROID,
    PROFILE_JETSON,
    REPRODUCE_ANDROID,
    REPRODUCE_JETSON,
)
from pacb_edge.core.consoles import stderr_console, stdout_console
from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.core.names import ATTENTION_NAMES, CRITERION_NAMES, DATASET_NAMES, listed
from pacb_edge.core.remote import PYTHON, REMOTE_DIR

app = typer.Typer(
    name="pacb-edge",
    help="Attention-guided channel pruning, from training to measured deployment on Jetson Nano and Android.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = stdout_console()
err_console = stderr_console()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step (ssh, adb, engine builds).")] = False,
) -> None:
    """Attention-guided channel pruning, from training to measured deployment on Jetson Nano and Android."""
    if verbose:
        import logging

        from rich.logging import RichHandler

        handler = RichHandler(console=err_console, show_path=False, markup=False)
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", handlers=[handler], force=True)


def _exit_with(error: PacbEdgeError, code: int) -> NoReturn:
    """A user mistake: one line on stderr, exit `code`, no traceback."""
    err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code) from None


def _config_defaults(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """--config FILE: the file's options become this command's defaults (the command line still wins)."""
    if value is None or ctx.resilient_parsing:
        return value
    from pacb_edge.core.run_config import load_config

    try:
        options = load_config(value)
        known = {p.name for p in ctx.command.params if p.name != param.name}
        unknown = sorted(set(options) - known)
        if unknown:
            valid = ", ".join(sorted(k.replace("_", "-") for k in known if k))
            raise PacbEdgeError(f"{value}: unknown option {unknown[0].replace('_', '-')!r}; valid: {valid}")
    except PacbEdgeError as e:  # before the command runs, so `user_errors` cannot catch it: the same one line
        _exit_with(e, code=2)
    ctx.default_map = {**(ctx.default_map or {}), **options}
    return value


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a `PacbEdgeError` into a one-line message and its exit code, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PacbEdgeError as e:
            _exit_with(e, code=e.exit_code)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper


@app.command("models")
@user_errors
def models_cmd(
    input_size: Annotated[int, typer.Option(help="Square input size in pixels.")] = 32,
    num_classes: Annotated[int, typer.Option(help="Number of classes of the classifier head.")] = 10,
    in_chans: Annotated[int, typer.Option(help="Input channels (1 or 3).")] = 3,
    attention: Annotated[str, typer.Option(help="Comma-separated attention modules per arch ('none' = without).")] = (
        "none,ca,sca"
    ),
    arch: Annotated[str, typer.Option(help="Comma-separated architectures (default: all registered).")] = "",
    input_stem: Annotated[str, typer.Option(help="Override the stem: 'imagenet' or 'cifar' (default: per arch).")] = "",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON here.")] = None,
) -> None:
    """List every registered architecture and attention module with params, MACs and FLOPs."""
    from pacb_edge.core.fileio import atomic_write_json
    from pacb_edge.models import list_attentions
    from pacb_edge.models.zoo import model_table

    if input_size < MIN_INPUT_SIZE:
        raise PacbEdgeError(f"--input-size must be at least {MIN_INPUT_SIZE}, got {input_size}")
    rows = model_table(
        input_size=input_size,
        num_classes=num_classes,
        in_chans=in_chans,
        attentions=split_csv(attention),
        archs=split_csv(arch) or None,
        input_stem=input_stem or None,
    )
    title = f"Models at {input_size}x{input_size}x{in_chans}, {num_classes} classes (batch 1)"
    print_table(console, title, view.MODELS_HEADER, view.model_rows(rows), label_columns=2)
    console.print(f"attention modules: {', '.join(list_attentions())}")
    if json_out is not None:
        atomic_write_json(json_out, rows)
        console.print(f"wrote {json_out}")


@app.command()
@user_errors
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Architecture (see `pacb-edge models`).")] = "mobilenetv3_large",
    attention: Annotated[
        str | None, typer.Option(help=f"Attention module: {listed((*ATTENTION_NAMES, 'none'))}.")
    ] = None,
    dataset: Annotated[str, typer.Option(help=f"{listed((*DATASET_NAMES, 'imagefolder:PATH'))}.")] = ("digits"),
    data_dir: Annotated[str | None, typer.Option(help="Where the dataset files are (or go with --download).")] = None,
    download: Annotated[bool, typer.Option(help="Let torchvision download the dataset.")] = False,
    input_size: Annotated[
        int, typer.Option(help="Model input size in pixels (the papers use 32); picks the recipe of the defaults.")
    ] = 32,
    input_stem: Annotated[
        str | None,
        typer.Option(help="imagenet (original stride) or cifar (stride-1 stem) [default: the recipe's]."),
    ] = None,
    width_mult: Annotated[float, typer.Option(help="Channel width multiplier.")] = 1.0,
    grayscale_to_rgb: Annotated[bool, typer.Option(help="Repeat grayscale images to 3 channels.")] = False,
    epochs: Annotated[int, typer.Option(help="Training epochs (with sparsity when --sparsity > 0).")] = 30,
    batch_size: Annotated[
        int | None, typer.Option(help="Global batch size (split across DDP processes) [default: the recipe's].")
    ] = None,
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = "sgd",
    lr: Annotated[float | None, typer.Option(help="Peak learning rate [default: the recipe's].")] = None,
    momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
    nesterov: Annotated[bool, typer.Option(help="Nesterov momentum.")] = True,
    weight_decay: Annotated[
        float | None, typer.Option(help="Weight decay (not on BN/bias) [default: the recipe's].")
    ] = None,
    thin_weight_decay: Annotated[
        float | None,
        typer.Option(help="Weight decay of depthwise convs and attention modules [default: the recipe's]."),
    ] = None,
    scheduler: Annotated[str, typer.Option(help="cosine or step (x0.1 at 50 % and 75 %).")] = "cosine",
    warmup_epochs: Annotated[
        int | None, typer.Option(help="Linear warm-up epochs, at most a fifth of the run [default: the recipe's].")
    ] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Label smoothing [default: the recipe's].")] = None,
    augment: Annotated[
        bool, typer.Option(help="Random crop (and flip where the dataset allows it) on the training images.")
    ] = True,
    sparsity: Annotated[float, typer.Option(help="Network Slimming lambda: L1 on BN gamma (e.g. 1e-4).")] = 0.0,
    amp: Annotated[bool, typer.Option(help="Mixed precision (CUDA only).")] = True,
    channels_last: Annotated[bool, typer.Option(help="channels_last memory format (CUDA only).")] = True,
    sync_bn: Annotated[bool, typer.Option(help="SyncBatchNorm under torchrun.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for splits, init and batches.")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    prune: Annotated[str, typer.Option(help=f"Pruning criterion: {listed((*CRITERION_NAMES, 'none'))}.")] = "none",
    prune_ratio: Annotated[float | None, typer.Option(help="Global fraction of prunable channels to remove.")] = None,
    prune_threshold: Annotated[float | None, typer.Option(help="Remove channels scoring below this instead.")] = None,
    layer_ratio: Annotated[list[str] | None, typer.Option(help="Per-layer ratio NAME=RATIO (repeatable).")] = None,
    min_channels: Annotated[int, typer.Option(help="Never keep fewer channels in a layer.")] = 4,
    round_to: Annotated[
        str,
        typer.Option(
            help="Round kept channel counts up to a multiple: auto (the --latency-target runtime's, see "
            "`pacb-edge runtimes`) or a number (1: no rounding)."
        ),
    ] = "auto",
    latency_target: Annotated[
        str,
        typer.Option(
            rich_help_panel="Latency (pruning to a measured budget)",
            help="Where the model will run: onnxruntime, tflite, tflite-int8 (this host), jetson or android. "
            "Picks --round-to auto's multiple and where a budget is measured.",
        ),
    ] = "onnxruntime",
    latency_budget: Annotated[
        float | None,
        typer.Option(
            metavar="MS",
            rich_help_panel="Latency (pruning to a measured budget)",
            help="Prune to this per-image latency (ms) on --latency-target, measured; instead of --prune-ratio.",
        ),
    ] = None,
    latency_ratio: Annotated[
        float | None,
        typer.Option(
            metavar="R",
            rich_help_panel="Latency (pruning to a measured budget)",
            help="Prune to R x the unpruned model's latency on --latency-target, measured.",
        ),
    ] = None,
    latency_table: Annotated[
        Path | None,
        typer.Option(
            rich_help_panel="Latency (pruning to a measured budget)",
            help="Latency table from `pacb-edge profile` (reused only when every key matches; default: "
            "profiled into the run directory).",
        ),
    ] = None,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after pruning.")] = 10,
    finetune_lr: Annotated[float | None, typer.Option(help="Fine-tuning LR (default: lr / 5).")] = None,
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/default"),
    stage: Annotated[str, typer.Option(help="all, train, prune, finetune or eval.")] = "all",
    checkpoint: Annotated[Path | None, typer.Option(help="Start a single stage from this checkpoint.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the stage from its last checkpoint.")] = False,
    limit: Annotated[int | None, typer.Option(help="Cap each split at N images (quick runs).")] = None,
    train_limit: Annotated[
        int | None, typer.Option(help="Cap the training images at N; the test split stays whole.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads, pinned for the run (default: all cores).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    config: Annotated[
        Path | None,
        typer.Option(
            is_eager=True,
            callback=_config_defaults,
            help="TOML or YAML file of these options (a run's config.toml repeats it); the command line wins.",
        ),
    ] = None,
) -> None:
    """Train (with sparsity), prune channels structurally, fine-tune and evaluate; writes a run directory (with
    config.toml, to repeat it with --config)."""
    import shlex

    from pacb_edge.core.run_config import CONFIG_NAME, write_config
    from pacb_edge.studies.pipeline import run_pipeline

    params = {k: v for k, v in ctx.params.items() if k != "config"}
    opts = run_options(params, shlex.join(["pacb-edge", *sys.argv[1:]]))
    metrics = run_pipeline(
        opts,
        before_write=lambda: write_config(out / CONFIG_NAME, params, opts.command),
        log=lambda msg: err_console.print(f"[bold cyan]latency:[/] {msg}", highlight=False, soft_wrap=True),
    )
    _print_run_summary(metrics, out)


def _print_run_summary(metrics: dict[str, Any], run_dir: Path) -> None:
    print_table(console, f"run {run_dir}", view.RUN_HEADER, view.run_rows(metrics))
    for line in view.prune_lines(metrics):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"metrics: {run_dir / 'metrics.json'}")


@app.command("runtimes")
@user_errors
def runtimes_cmd(
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON here.")] = None,
) -> None:
    """The channel multiple each runtime wants (what --round-to auto rounds kept widths up to), with its source."""
    from pacb_edge.core.fileio import atomic_write_json
    from pacb_edge.core.runtimes import CHANNEL_MULTIPLES, LATENCY_TARGETS, host_isa, target_multiple

    rows = [[r.runtime, r.precision, r.isa, str(r.multiple), r.source, r.measured or r.note] for r in CHANNEL_MULTIPLES]
    header = ("runtime", "precision", "isa", "multiple", "source", "measured / note")
    print_table(console, "Channel multiples per runtime", header, rows, label_columns=3)
    auto = {t: target_multiple(t).multiple for t in LATENCY_TARGETS}
    console.print(
        f"this host: {host_isa()}; --round-to auto per --latency-target: "
        + ", ".join(f"{t} {m}" for t, m in auto.items()),
        highlight=False,
    )
    if json_out is not None:
        atomic_write_json(json_out, {"rows": [r.to_dict() for r in CHANNEL_MULTIPLES], "auto_here": auto})
        console.print(f"wrote {json_out}")


@app.command("profile")
@user_errors
def profile_cmd(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (its unpruned base/), stage directory or file.")],
    target: Annotated[str, typer.Option(help="onnxruntime, tflite, tflite-int8 (this host), jetson or android.")] = (
        "onnxruntime"
    ),
    threads: Annotated[
        int | None, typer.Option(help="Inference threads (default: all cores here; the runner's on a device).")
    ] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per candidate model.")] = 200,
    warmup: Annotated[int, typer.Option(help="Untimed runs per candidate model.")] = 20,
    models: Annotated[
        int | None, typer.Option(help="Random-width models to fit on (default: 3 per coefficient, at least 24).")
    ] = None,
    held_out: Annotated[int, typer.Option(help="Random-width models kept out of the fit, to check it.")] = 8,
    prune: Annotated[str, typer.Option(help="The criterion the table serves (attention criteria remove theirs).")] = (
        "bn-scale"
    ),
    min_channels: Annotated[int, typer.Option(help="Smallest width a group may keep.")] = 4,
    round_to: Annotated[str, typer.Option(help="Channel multiple: auto (the target's) or a number.")] = "auto",
    out: Annotated[
        Path | None, typer.Option(help="Table JSON (default: latency_table_<target>.json in the run directory).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Dataset folder (real images calibrate INT8 candidates).")
    ] = None,
    host: PROFILE_JETSON.Host = None,
    port: PROFILE_JETSON.Port = None,
    remote_dir: PROFILE_JETSON.RemoteDir = REMOTE_DIR,
    local: Annotated[
        bool, typer.Option(rich_help_panel="Jetson (--target jetson)", help="Run on this machine (the Jetson).")
    ] = False,
    python: PROFILE_JETSON.Python = PYTHON,
    identity: PROFILE_JETSON.Identity = None,
    ssh_config: PROFILE_JETSON.SshConfig = None,
    backend: Annotated[
        str, typer.Option(rich_help_panel="Jetson (--target jetson)", help="tensorrt or onnxruntime.")
    ] = "tensorrt",
    precision: Annotated[
        str | None,
        typer.Option(help="jetson: fp32, fp16 (default) or int8; android: fp32 (default) or int8 TFLite."),
    ] = None,
    serial: PROFILE_ANDROID.Serial = None,
    benchmark_binary: PROFILE_ANDROID.BenchmarkBinary = None,
    delegate: Annotated[
        str, typer.Option(rich_help_panel="Android (--target android)", help="cpu, xnnpack, gpu or nnapi.")
    ] = "xnnpack",
    taskset: Annotated[
        str | None, typer.Option(rich_help_panel="Android (--target android)", help="CPU affinity mask.")
    ] = None,
) -> None:
    """Measure how the model's latency on a runtime responds to each prunable group's width: the latency table
    `train --latency-budget/--latency-ratio` prunes with. Candidate models are real prunes of CHECKPOINT, exported
    to the target's format and measured there; a latency model is fitted to them and checked on held-out ones."""
    import shlex

    from pacb_edge.cli.options import profile_options
    from pacb_edge.data.datasets import rebuild_dataset
    from pacb_edge.studies.latency_profile import group_rows, profile_latency, table_name, write_profile
    from pacb_edge.training.checkpoint import load_checkpoint

    source = checkpoint / "base" if (checkpoint / "base" / "model.safetensors").is_file() else checkpoint
    profile, opts = profile_options(ctx.params)
    model, spec = load_checkpoint(source)
    if out is None:
        out = (checkpoint if checkpoint.is_dir() and source != checkpoint else source if source.is_dir() else
               source.parent) / table_name(target)  # fmt: skip
    images = rebuild_dataset(spec, data_dir=data_dir).calibration_images(32, raw=True).astype("float32")
    command = shlex.join(["pacb-edge", *sys.argv[1:]])
    table = profile_latency(
        model,
        spec,
        images,
        profile,
        opts,
        log=lambda m: err_console.print(f"[bold cyan]profile:[/] {m}"),
        command=command,
    )
    files = write_profile(table, out)
    header = ("group (root conv)", "channels", "smallest", "predicted change, half (ms)", "at smallest (ms)")
    key = table.key
    title = f"{key.arch} at {key.input_size}px on {key.runtime} ({key.runtime_version}, {key.threads} threads)"
    print_table(console, title, header, group_rows(table), label_columns=1)
    v = table.validation
    console.print(
        f"unpruned {table.unpruned_ms:.3f} ms, full-width reference {table.reference_ms:.3f} ms, floor (every group "
        f"at its smallest) {table.floor_ms:.3f} ms; channel multiple {key.multiple}",
        highlight=False,
    )
    console.print(
        f"prediction error on {v['held_out_models']} held-out models: mean {100 * v['mean_abs_error']:.1f} %, max "
        f"{100 * v['max_abs_error']:.1f} % (the same model in two sessions differed by {100 * abs(v['noise']):.1f} %)",
        highlight=False,
    )
    console.print(f"{table.meta['seconds']:.0f} s; table: {files['json']}, {files['csv']}, {files['png']}")


@app.command("check")
@user_errors
def check_cmd(
    model: Annotated[Path, typer.Argument(help="An ONNX file.")],
    trt: Annotated[
        str,
        typer.Option(
            "--trt",
            help="TensorRT version to check against: 8.0 (JetPack 4.6), 8.2 (4.6.1+), 8.4, 8.5, 8.6, 10.1, 10.3.",
        ),
    ] = "8.0",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the problems as JSON here.")] = None,
) -> None:
    """Would this TensorRT version's ONNX parser take MODEL? Checked here, with no TensorRT installed.

    Prints "ok" (exit 0), or one line per problem: the operator, the node and the first TensorRT that takes it (exit 1).
    """
    from pacb_edge.core.fileio import atomic_write_json
    from pacb_edge.export.trt_check import check_model, get_profile

    profile = get_profile(trt)
    problems = check_model(model, profile.version)
    if json_out is not None:
        found = [p.to_dict() for p in problems]
        atomic_write_json(
            json_out, {"model": str(model), "tensorrt": profile.version, "ok": not problems, "problems": found}
        )
    if not problems:
        console.print(f"ok: {profile.label} can parse {model.name}", highlight=False)
        return
    for problem in problems:
        console.print(problem.line(), highlight=False, soft_wrap=True)
    err_console.print(f"{len(problems)} problem(s): {profile.label} cannot parse {model.name}", highlight=False)
    raise typer.Exit(code=1)


@app.command()
@user_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory, stage directory or model.safetensors.")],
    target: Annotated[list[str] | None, typer.Option(help="onnx, trt or tflite (repeatable; default onnx).")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="fp32, fp16 or int8 (comma-separated; default: onnx fp32, tflite all three, trt fp16)."),
    ] = None,
    calibration_images: Annotated[int, typer.Option(help="Class-balanced training images for INT8 calibration.")] = 300,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: next to the checkpoint).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (trt: capped at the --trt version's highest).")] = 17,
    trt: Annotated[
        str,
        typer.Option(
            "--trt",
            rich_help_panel="TensorRT (--target trt)",
            help="trt: target TensorRT version (8.0 = JetPack 4.6, the oldest Nano parser; 8.2 = 4.6.1+), see `check`.",
        ),
    ] = "8.0",
    dynamic_batch: Annotated[bool, typer.Option(help="ONNX with a dynamic batch axis.")] = False,
    max_int8_drop: Annotated[float, typer.Option(help="Fail when INT8 loses more top-1 (pp) than this.")] = 1.0,
    allow_drop: Annotated[bool, typer.Option(help="Keep INT8 past --max-int8-drop or --int8-budget.")] = False,
    int8_budget: Annotated[
        float, typer.Option(metavar="PP", help="INT8: fewest float layers that keep the validation drop <= PP.")
    ] = 0.5,
    int8_float_ops: Annotated[
        str,
        typer.Option(
            metavar="OPS",
            help="INT8 TFLite: operator types kept in float in every candidate (comma-separated; HARD_SWISH: "
            "XNNPACK has no INT8 h-swish).",
        ),
    ] = "",
    data_dir: Annotated[str | None, typer.Option(help="Dataset folder, for verification on real test images.")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Verify on the first N test images only.")] = None,
    host: EXPORT_JETSON.Host = None,
    port: EXPORT_JETSON.Port = None,
    ssh_config: EXPORT_JETSON.SshConfig = None,
    identity: EXPORT_JETSON.Identity = None,
    remote_dir: EXPORT_JETSON.RemoteDir = REMOTE_DIR,
    python: EXPORT_JETSON.Python = PYTHON,
) -> None:
    """Export a checkpoint to ONNX, TensorRT or INT8 TFLite, each verified against PyTorch on real test images."""
    from pacb_edge.export.api import export_checkpoint
    from pacb_edge.export.tflite import int8_line

    report = export_checkpoint(
        checkpoint,
        target or ["onnx"],
        precision=precision,
        out_dir=out,
        calibration_images=calibration_images,
        opset=opset,
        trt_version=trt,
        dynamic_batch=dynamic_batch,
        max_int8_drop=max_int8_drop,
        allow_drop=allow_drop,
        int8_budget=int8_budget,
        int8_float_ops=[t for t in int8_float_ops.split(",") if t.strip()],
        data_dir=data_dir,
        eval_limit=eval_limit,
        ssh=ssh_options(host, port, ssh_config, identity, remote_dir, python) if host else None,
    )
    title = f"export of {report['checkpoint']} (PyTorch top-1 {100 * report['torch_top1']:.2f} %)"
    print_table(console, title, view.EXPORT_HEADER, view.export_rows(report), label_columns=3)
    for a in report["artifacts"]:
        if a.get("int8"):
            console.print(int8_line(Path(a["path"]).name, a["int8"]), highlight=False, soft_wrap=True)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"report: {Path(report['out_dir']) / 'export_report.json'}")


@app.command()
@user_errors
def bench(
    ctx: typer.Context,
    artifacts: Annotated[list[Path], typer.Argument(help="Checkpoints, .onnx, .tflite files or Jetson bundles.")],
    device: Annotated[str, typer.Option(help="cpu, jetson or android.")] = "cpu",
    baseline: Annotated[Path | None, typer.Option(help="Artifact whose latency the speed-ups are relative to.")] = None,
    threads: Annotated[
        int | None, typer.Option(help="Inference threads, the same for every runner (default: all cores on the host).")
    ] = None,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs per artifact.")] = 20,
    runs: Annotated[int, typer.Option(help="Timed runs per artifact (batch 1).")] = 100,
    min_time: Annotated[float, typer.Option(help="Keep timing until this many seconds passed.")] = 0.0,
    min_accuracy: Annotated[float, typer.Option(help="Mark artifacts under this top-1 (0-1) with ❎.")] = 0.0,
    eval_limit: Annotated[int | None, typer.Option(help="Measure accuracy on the first N test images.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Expected dataset (checked against each manifest).")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Dataset folder.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for bench.json, bench.csv and pareto.png.")] = Path("bench"),
    host: BENCH_JETSON.Host = None,
    port: BENCH_JETSON.Port = None,
    remote_dir: BENCH_JETSON.RemoteDir = REMOTE_DIR,
    local: Annotated[
        bool,
        typer.Option(
            rich_help_panel="Jetson (--device jetson)", help="jetson: run on this machine (on the Jetson itself)."
        ),
    ] = False,
    python: BENCH_JETSON.Python = PYTHON,
    identity: BENCH_JETSON.Identity = None,
    backend: Annotated[
        str, typer.Option(rich_help_panel="Jetson (--device jetson)", help="jetson: tensorrt or onnxruntime.")
    ] = "tensorrt",
    precision: Annotated[
        str | None,
        typer.Option(
            rich_help_panel="Jetson (--device jetson)",
            help="jetson: fp32, fp16 or int8 (default fp16 for tensorrt, fp32 for onnxruntime).",
        ),
    ] = None,
    ssh_config: BENCH_JETSON.SshConfig = None,
    serial: BENCH_ANDROID.Serial = None,
    benchmark_binary: BENCH_ANDROID.BenchmarkBinary = None,
    eval_binary: BENCH_ANDROID.EvalBinary = None,
    delegate: Annotated[
        str,
        typer.Option(
            rich_help_panel="Android (--device android)",
            help="android: cpu (TFLite's reference kernels, XNNPACK off), xnnpack, gpu or nnapi.",
        ),
    ] = "xnnpack",
    use_gpu: Annotated[bool, typer.Option(hidden=True, help="Deprecated: --delegate gpu.")] = False,
    use_nnapi: Annotated[bool, typer.Option(hidden=True, help="Deprecated: --delegate nnapi.")] = False,
    use_xnnpack: Annotated[bool, typer.Option(hidden=True, help="Deprecated: --delegate xnnpack.")] = False,
    taskset: Annotated[
        str | None,
        typer.Option(rich_help_panel="Android (--device android)", help="android: CPU affinity mask, e.g. f0."),
    ] = None,
) -> None:
    """Per-image latency alongside accuracy for every artifact, on the host, a Jetson or an Android phone."""
    from pacb_edge.device_bench.bench import BenchOptions, run_bench, status_icon, write_reports

    jetson_opts, android_opts, notes = bench_device_options(ctx.params)
    for note in notes:
        err_console.print(note, highlight=False)
    opts = BenchOptions(
        device=device,
        baseline=str(baseline) if baseline else None,
        threads=threads,
        warmup=warmup,
        runs=runs,
        min_time=min_time,
        min_accuracy=min_accuracy,
        eval_limit=eval_limit,
        data_dir=data_dir,
        dataset=dataset,
        out_dir=out,
        jetson=jetson_opts,
        android=android_opts,
    )
    results = run_bench([str(a) for a in artifacts], opts)
    paths = write_reports(results, out, meta={"command": " ".join(["pacb-edge", *sys.argv[1:]]), "device": device})
    used = sorted({r.threads for r in results if r.threads})
    thread_note = f", {used[0]} thread{'s' if used[0] > 1 else ''} for every runner" if len(used) == 1 else ""
    title = f"bench on {device} (batch 1, {runs} timed runs, interleaved{thread_note})"
    print_table(console, title, view.BENCH_HEADER, view.bench_rows(results, status_icon), label_columns=4)
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        err_console.print(f"[red]❌ {r.artifact}:[/] {r.error}", highlight=False)
    console.print(f"results: {paths['json']}, {paths['csv']}, {paths['png']}")
    if failed:
        raise typer.Exit(code=1)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Where the runs, artifacts, bench reports and plots go.")] = Path(
        "runs/demo"
    ),
    epochs: Annotated[int, typer.Option(help="Training epochs per model.")] = 16,
    finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after pruning.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed for the splits, the initial weights and the loaders.")] = 0,
    prune_ratio: Annotated[float, typer.Option(help="Global fraction of channels PACB removes.")] = 0.3,
    latency_ratio: Annotated[
        float | None,
        typer.Option(
            metavar="R",
            help="Also prune each CA model to R x its measured onnxruntime latency (the CA_Latency rows).",
        ),
    ] = None,
    width_mult: Annotated[float, typer.Option(help="Width multiplier (1.0 = the papers' models).")] = 1.0,
    bench_runs: Annotated[int, typer.Option(help="Timed runs per artifact.")] = 100,
    threads: Annotated[int | None, typer.Option(help="Torch threads in all (default: all cores).")] = None,
    jobs: Annotated[
        int | None, typer.Option(help="Models trained and exported side by side (default: one per core).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars (with one job).")] = True,
) -> None:
    """Run the main job end to end on the bundled digits data: train, prune, export, verify, bench."""
    from pacb_edge.studies.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out=out,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        seed=seed,
        prune_ratio=prune_ratio,
        latency_ratio=latency_ratio,
        width_mult=width_mult,
        bench_runs=bench_runs,
        threads=threads,
        jobs=jobs,
        progress=progress,
    )
    result = run_demo(cfg, log=lambda msg: err_console.print(f"[bold cyan]demo:[/] {msg}"))
    title = "PACB on digits 32x32: per-image latency on this CPU (batch 1)"
    print_table(console, title, view.DEMO_HEADER, view.demo_rows(result))
    console.print(
        f"total {result['timings_s']['total']:.0f} s; results: {out / 'demo_results.json'}, "
        f"{out / 'demo_results.md'}, {out / 'bench' / 'pareto.png'}"
    )


@app.command()
@user_errors
def reproduce(
    ctx: typer.Context,
    paper: Annotated[str, typer.Argument(help="pacb (Tables 2-4) or cpsca (Tables 4-5).")],
    dataset: Annotated[
        str, typer.Option(help="digits (bundled), cifar10, cifar100, fashion-mnist or gtsrb (as `pacb-edge train`).")
    ] = "digits",
    budget: Annotated[
        str,
        typer.Option(
            help="paper: the papers' schedule (160 + 160 epochs, for a GPU); cpu: sized for a 2-core CPU (a training "
            "subset, a narrower model, fewer epochs, 3 seeds; the table caption says which)."
        ),
    ] = "paper",
    quick: Annotated[bool, typer.Option(help="Smoke run of a few minutes (width x0.25, 256 images, 4 epochs)")] = False,
    seeds: Annotated[int | None, typer.Option(help="Seeds 0..N-1, shown as mean ± std (default: the budget's)")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Results folder (default runs/reproduce_<paper>_<dataset>[_cpu][_quick]).")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where the dataset files are.")] = None,
    download: Annotated[bool, typer.Option(help="Let torchvision download the dataset into --data-dir.")] = False,
    prune_ratio: Annotated[float, typer.Option(help="pacb: fraction of channels bn-scale removes.")] = 0.3,
    latency_ratio: Annotated[
        float | None,
        typer.Option(
            metavar="R", help="pacb: also prune CA to R x its measured onnxruntime latency (CA_Latency rows)."
        ),
    ] = None,
    ratios: Annotated[
        str | None, typer.Option(help="cpsca: comma-separated channel ratios (default: the paper's levels).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the budget's).")] = None,
    finetune_epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs (default: the budget's).")] = None,
    sparsity: Annotated[float | None, typer.Option(help="Slimming lambda (default 1e-4; cpsca ResNet56 1e-5).")] = None,
    width_mult: Annotated[float | None, typer.Option(help="Width multiplier (default: the budget's).")] = None,
    limit: Annotated[int | None, typer.Option(help="Cap each split at N images (the test split too).")] = None,
    train_limit: Annotated[int | None, typer.Option(help="Cap training images at N (test split stays whole).")] = None,
    archs: Annotated[str | None, typer.Option(help="Comma-separated subset of the paper's architectures.")] = None,
    device: Annotated[str, typer.Option(help="cpu, or also jetson / android for on-device columns.")] = "cpu",
    host: REPRODUCE_JETSON.Host = None,
    port: REPRODUCE_JETSON.Port = None,
    remote_dir: REPRODUCE_JETSON.RemoteDir = REMOTE_DIR,
    serial: REPRODUCE_ANDROID.Serial = None,
    benchmark_binary: REPRODUCE_ANDROID.BenchmarkBinary = None,
    eval_binary: REPRODUCE_ANDROID.EvalBinary = None,
    threads: Annotated[
        int | None,
        typer.Option(help="Torch threads in all: the host bench's, split over the jobs (default: all cores)."),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Grid parts (one architecture, one seed) trained and exported side by side (default: one per thread)."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars (with one job).")] = True,
) -> None:
    """Rerun a paper's experiment grid and print its tables, the paper's numbers next to ours.

    pacb: MobileNetV3-Large and RepVGG-A0 as Base, +CA and +CA+Pruned (Tables 2-4).

    cpsca: VGG16 and ResNet56 pruned by L1-norm, Network Slimming, CPSE and CPSCA (Tables 4-5).

    cpsca --budget cpu: one VGG16-SCA model pruned by CPSCA, Slimming, L1-norm and random at 50 % and 80 % of the
    channels, to test CPSCA >= Slimming >= L1-norm (benchmarks/cpsca_vgg16.sh).

    --budget paper is the papers' schedule (160 + 160 epochs, lr 0.1, batch 64): it needs a GPU. --budget cpu is
    sized for a 2-core CPU (pacb on fashion-mnist: 66 minutes measured). An interrupted run resumes cell by cell;
    --quick is a smoke test.
    """
    from pacb_edge.studies.reproduce import run_reproduce

    cfg = reproduce_config(ctx.params)
    result = run_reproduce(cfg, log=lambda msg: err_console.print(f"[bold cyan]reproduce:[/] {msg}"))
    for line in result["preamble"]:
        console.print(line, highlight=False)
    said: set[str] = set()
    for t in result["tables"]:
        print_table(
            console,
            t["title"],
            t["header"],
            t["rows"],
            label_columns=t["label_columns"],
            caption=t.get("caption"),
            dim=t["measured"],
        )
        for note in t["notes"]:
            if note not in said:
                console.print(f"[yellow]note:[/] {note}", highlight=False)
                said.add(note)
    timings = result["timings"]
    console.print(
        f"{timings['cells_computed']} cell(s) computed, {timings['cells_cached']} reused, "
        f"{timings['total_s']:.0f} s; results: {result['files']['json']}, {result['files']['md']}"
    )


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
