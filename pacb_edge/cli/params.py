"""Options several commands share, declared once: the Jetson's ssh options and the phone's adb options, as
`Annotated` aliases per help panel (`profile`, `export`, `bench` and `reproduce` take the same ones)."""

from pathlib import Path
from typing import Annotated

import typer


def _option(panel: str | None, text: str):
    return typer.Option(rich_help_panel=panel, help=text)


class JetsonOptions:
    """The ssh options of one command, shown under `panel` in its --help."""

    def __init__(self, panel: str | None) -> None:
        self.Host = Annotated[str | None, _option(panel, "jetson: user@host (or an ~/.ssh/config alias).")]
        self.Port = Annotated[int | None, _option(panel, "jetson: ssh port.")]
        self.RemoteDir = Annotated[str, _option(panel, "jetson: folder on the device (~/ allowed).")]
        self.Python = Annotated[
            str, _option(panel, "jetson: Python with TensorRT's bindings (JetPack 4.6: the system python3).")
        ]
        self.Identity = Annotated[str | None, _option(panel, "jetson: ssh identity file (ssh -i).")]
        self.SshConfig = Annotated[str | None, _option(panel, "jetson: ssh config file (ssh -F).")]


class AndroidOptions:
    """The adb options of one command, shown under `panel` in its --help."""

    def __init__(self, panel: str | None) -> None:
        self.Serial = Annotated[str | None, _option(panel, "android: adb serial (needed with several phones).")]
        self.BenchmarkBinary = Annotated[
            Path | None, _option(panel, "android: TFLite benchmark_model binary for the phone.")
        ]
        self.EvalBinary = Annotated[Path | None, _option(panel, "android: TFLite run_eval, for on-device accuracy.")]


PROFILE_JETSON = JetsonOptions("Jetson (--target jetson)")
PROFILE_ANDROID = AndroidOptions("Android (--target android)")
EXPORT_JETSON = JetsonOptions("TensorRT (--target trt)")
BENCH_JETSON = JetsonOptions("Jetson (--device jetson)")
BENCH_ANDROID = AndroidOptions("Android (--device android)")
REPRODUCE_JETSON = JetsonOptions("Jetson (--device jetson)")
REPRODUCE_ANDROID = AndroidOptions("Android (--device android)")
