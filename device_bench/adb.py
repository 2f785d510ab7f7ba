"""The adb transport: find the phone, read its facts, push files, run quoted commands on it, clean up.

`AdbDevice` is what the Android runner (`android.py`) and on-device accuracy (`run_eval.py`) talk to the phone
through: `select_device` picks the serial (`adb devices`), `device_facts` reads `getprop`, `check_abi` refuses a
binary built for another ABI, `push_binary` pushes a binary when the copy on the phone differs in size, `shell` runs
one command there and `cleanup` removes what a run pushed. Every failure is one `PacbEdgeError` line saying what to
do (install adb, accept the USB-debugging prompt, pass --serial, ...).

Safety: every host command is an argument list (never `shell=True`), and every `adb shell` command string is
built by `shell_join`, which quotes each word with `shlex.quote`, so a file or folder name holding spaces,
`;`, `$()` or backticks reaches the phone's shell as one literal word.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pacb_edge.core.errors import PacbEdgeError

__all__ = ["DEVICE_PROPS", "AdbDevice", "last_line", "shell_join"]

log = logging.getLogger(__name__)

# What each `getprop` key is recorded as in `device_facts`.
DEVICE_PROPS: dict[str, str] = {
    "model": "ro.product.model",
    "board": "ro.board.platform",
    "android": "ro.build.version.release",
    "abi": "ro.product.cpu.abi",
    "abilist": "ro.product.cpu.abilist",
}

# `adb devices` state -> what the user should do.
_STATE_HELP: dict[str, str] = {
    "unauthorized": "accept the 'Allow USB debugging?' prompt on the phone, then retry",
    "authorizing": "accept the 'Allow USB debugging?' prompt on the phone, then retry",
    "offline": "it does not answer adb: replug the cable or run `adb reconnect`, then retry",
    "no permissions": "this user may not open the USB device: add a udev rule for the phone, then replug it",
    "connecting": "adb is still connecting to it: retry in a few seconds",
    "recovery": "it is in recovery mode: boot it normally",
    "sideload": "it is in sideload mode: boot it normally",
    "bootloader": "it is in bootloader mode: boot it normally",
}

# ELF e_machine -> Android ABI, to catch an arm64 binary pushed to a 32-bit phone before it fails cryptically.
_ELF_ABI = {0xB7: "arm64-v8a", 0x28: "armeabi-v7a", 0x3E: "x86_64", 0x03: "x86"}


def shell_join(argv: Sequence[str]) -> str:
    """One `adb shell` command string from words, each quoted for a POSIX shell (mksh/toybox on the phone)."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def _elf_abi(path: Path) -> str | None:
    """The Android ABI an ELF binary is built for, or None if it is not an ELF file (e.g. a script)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return _ELF_ABI.get(int.from_bytes(head[18:20], order))


def last_line(*texts: str | None) -> str:
    """The last non-blank line (at most 300 characters) of the first text that has one; "" if none does."""
    for text in texts:
        lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:300]
    return ""


class AdbDevice:
    """The adb client `adb` talking to a phone, with a working folder `remote_dir` on it.

    `timeout_s` bounds pushes of large files and long shell commands (callers pass it as `timeout`);
    `adb_timeout_s` bounds every other adb call.
    """

    def __init__(self, adb: str, remote_dir: str, timeout_s: float = 600.0, adb_timeout_s: float = 60.0) -> None:
        self.adb = adb
        self.remote_dir = remote_dir
        self.timeout_s = float(timeout_s)
        self.adb_timeout_s = float(adb_timeout_s)

    # adb plumbing

    def adb_path(self) -> str:
        found = shutil.which(self.adb)
        if not found:
            raise PacbEdgeError(
                f"adb not found ({self.adb!r} is not on PATH): install Android platform-tools "
                "(Debian/Ubuntu: apt-get install adb) or pass the path to adb"
            )
        return found

    def run(
        self,
        args: Sequence[str],
        what: str,
        timeout: float | None = None,
        check: bool = True,
        serial: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `adb [-s serial] args...`; `what` names the step in errors. Raises on failure when `check`."""
        cmd = [self.adb_path()]
        if serial:
            cmd += ["-s", serial]
        cmd += list(args)
        limit = timeout or self.adb_timeout_s
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            raise PacbEdgeError(f"adb {what} timed out after {limit:g} s") from None
        except OSError as e:
            raise PacbEdgeError(f"cannot run adb ({self.adb}): {e.strerror or e}") from None
        if check and done.returncode != 0:
            detail = last_line(done.stderr, done.stdout) or f"exit code {done.returncode}"
            raise PacbEdgeError(f"adb {what} failed: {detail}")
        return done

    def shell(
        self,
        serial: str,
        argv: Sequence[str],
        what: str,
        timeout: float | None = None,
        check: bool = True,
        merge_stderr: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run one quoted command on the phone. `merge_stderr` appends a literal `2>&1` (not user input)."""
        command = shell_join(argv) + (" 2>&1" if merge_stderr else "")
        return self.run(["shell", command], what, timeout=timeout, check=check, serial=serial)

    def remote(self, name: str) -> str:
        """The path of `name` in the working folder on the phone."""
        return posixpath.join(self.remote_dir, name)

    # steps

    def select_device(self, serial_wanted: str | None) -> str:
        """The serial to use: the only attached device, or `serial_wanted`; a clear error for every other case."""
        out = self.run(["devices"], "devices").stdout
        devices: list[tuple[str, str]] = []
        for line in out.splitlines():
            line = line.strip()
            if not line or line.startswith("*") or line.startswith("List of devices"):
                continue
            parts = line.split(None, 1)
            state = parts[1].strip() if len(parts) > 1 else "unknown"
            state = "no permissions" if state.startswith("no permissions") else state.split()[0]
            devices.append((parts[0], state))
        listed = ", ".join(f"{s} ({st})" if st != "device" else s for s, st in devices)
        if serial_wanted:
            states = dict(devices)
            if serial_wanted not in states:
                raise PacbEdgeError(f"device {serial_wanted} is not attached (adb devices lists: {listed or 'none'})")
            serial, state = serial_wanted, states[serial_wanted]
        elif not devices:
            raise PacbEdgeError(
                "no Android device attached (adb devices lists none): connect a phone with USB debugging on"
            )
        elif len(devices) > 1:
            raise PacbEdgeError(f"several devices attached ({listed}): pass --serial")
        else:
            serial, state = devices[0]
        if state != "device":
            help_text = _STATE_HELP.get(state, "it is not ready for adb")
            raise PacbEdgeError(f"device {serial} is {state}: {help_text}")
        return serial

    def device_facts(self, serial: str) -> dict[str, Any]:
        """Model, SoC platform, Android release and ABIs from `getprop` (one `adb shell` for all of them)."""
        command = " ; ".join(shell_join(["getprop", prop]) for prop in DEVICE_PROPS.values())
        done = self.run(["shell", command], "shell getprop", check=False, serial=serial)
        values = [ln.strip() for ln in done.stdout.splitlines()] if done.returncode == 0 else []
        facts: dict[str, Any] = {"serial": serial}
        for i, key in enumerate(DEVICE_PROPS):
            facts[key] = (values[i] if i < len(values) else "") or None
        return facts

    def check_abi(self, binary: Path, facts: Mapping[str, Any]) -> None:
        """Raise when `binary` is an ELF file built for an ABI the device (`facts` from `device_facts`) lacks."""
        abi = _elf_abi(binary)
        supported = [a for a in str(facts.get("abilist") or facts.get("abi") or "").split(",") if a]
        if abi and supported and abi not in supported:
            raise PacbEdgeError(
                f"{binary.name} is built for {abi} but the device runs {', '.join(supported)}: use a matching build"
            )

    def push_binary(self, serial: str, binary: Path) -> str:
        """Push `binary` unless the phone already has a file of the same size there; make it executable."""
        remote = self.remote(binary.name)
        done = self.shell(serial, ["stat", "-c", "%s", remote], "shell stat", check=False)
        if done.returncode != 0 or done.stdout.strip() != str(binary.stat().st_size):
            self.run(["push", str(binary), remote], f"push {binary.name}", timeout=self.timeout_s, serial=serial)
        self.shell(serial, ["chmod", "755", remote], "shell chmod")
        return remote

    def cleanup(self, serial: str, paths: Sequence[str]) -> bool:
        """Remove what this run pushed (the binaries stay); returns False if the phone did not confirm it."""
        ok = True
        for path in paths:
            try:
                done = self.shell(serial, ["rm", "-rf", path], "shell rm", check=False)
                ok = ok and done.returncode == 0
            except PacbEdgeError as e:  # never hide the run's own error behind a cleanup error
                log.warning("could not remove %s from %s: %s", path, serial, e)
                ok = False
        return ok
