"""OpenSSH transport for the Jetson: `ssh` as the user has it configured (`~/.ssh/config`, agent, known_hosts).

Host-key checking is never turned off, and every remote command is built with `shlex.quote`.

Files are copied as a tar stream over the ssh command channel (`tar -x` on the device), not with `scp`: since
OpenSSH 9.0 `scp` speaks SFTP by default and takes the remote path literally, while older clients (and `scp -O`)
hand it to the remote shell. One quoting cannot be right for both, so a folder name with spaces, `;`, `$()` or
backticks would either fail or run as a command. The ssh command channel always goes through the remote shell,
where `shlex.quote` is exactly right.

An upload can leave a marker file, written only after `tar -x` succeeded (`upload(..., marker=(name, text))`);
`marker_matches` asks in one ssh command whether a folder holds it, so a complete upload is never sent twice.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pacb_edge.core.errors import PacbEdgeError

REMOTE_DIR = "~/pacb_edge"  # the default folder on the Jetson
PYTHON = "python3"  # the default Python on the Jetson (JetPack 4.6: the system Python 3.6 has TensorRT's bindings)

# Create the folder, then unpack the tar stream from stdin into it. The folder arrives as "$1", never as code.
_UNTAR_SCRIPT = 'mkdir -p -- "$1" && exec tar -x -f - -C "$1" --no-same-owner'
# The same, dropping marker "$2" first and writing it (text "$3", via a temp file and mv) only once tar succeeded.
_UNTAR_MARK_SCRIPT = (
    'mkdir -p -- "$1" && rm -f -- "$1/$2" && tar -x -f - -C "$1" --no-same-owner && '
    'printf "%s\\n" "$3" > "$1/$2.tmp" && mv -f -- "$1/$2.tmp" "$1/$2"'
)
# Prints "yes" when marker "$2" in folder "$1" holds exactly the text "$3", else "no".
_MARKER_SCRIPT = '[ "$(cat -- "$1/$2" 2>/dev/null)" = "$3" ] && echo yes || echo no'


def remote_path(path: str) -> str:
    """A remote path as the remote shell should see it once quoted: `~` and `~/x` become paths relative to the
    login folder (ssh starts commands there), since a quoted `~` is not expanded. Other `~user` forms are refused,
    and a leading `-` gets `./` so no command takes the path for an option."""
    path = str(path).strip()
    if not path:
        raise PacbEdgeError("empty remote path")
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:].lstrip("/") or "."
    if path.startswith("~"):
        raise PacbEdgeError(f"remote path {path!r}: only '~/' is understood; give an absolute path instead")
    return "./" + path if path.startswith("-") else path  # never read as an option by the remote command


@dataclass
class SSHTarget:
    """A remote host reached with OpenSSH. `host` is `user@host` or an alias from ~/.ssh/config."""

    host: str
    port: int | None = None
    identity_file: str | None = None
    config_file: str | None = None  # `ssh -F FILE` (tests use a temp config with a pinned known_hosts)
    options: list[str] = field(default_factory=list)  # extra `-o Key=Value` entries
    connect_timeout: int = 10

    def __post_init__(self) -> None:
        if self.identity_file:
            self.identity_file = os.path.expanduser(str(self.identity_file))
        if self.config_file:
            self.config_file = os.path.expanduser(str(self.config_file))
        if not self.host or self.host.startswith("-") or any(c.isspace() for c in self.host):
            raise PacbEdgeError(f"invalid ssh host {self.host!r}")
        for opt in self.options:
            key, _, value = opt.replace("=", " ", 1).strip().partition(" ")
            if key.lower() == "stricthostkeychecking" and value.strip().lower() in ("no", "off", "false"):
                raise PacbEdgeError("refusing to turn off ssh host-key checking; add the host to known_hosts")

    def _common(self, port_flag: str) -> list[str]:
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.config_file:
            args = ["-F", str(self.config_file), *args]
        if self.port:
            args += [port_flag, str(self.port)]
        if self.identity_file:
            args += ["-i", str(self.identity_file)]
        for opt in self.options:
            args += ["-o", opt]
        return args

    def ssh_argv(self, remote_argv: Sequence[str]) -> list[str]:
        """The local argv that runs `remote_argv` on the host; each word is quoted for the remote shell."""
        return [_tool("ssh"), *self._common("-p"), "--", self.host, shlex.join([str(a) for a in remote_argv])]

    def _ssh(
        self, remote_argv: Sequence[str], what: str, timeout: float, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    ) -> subprocess.CompletedProcess:
        """Run ssh; a timeout or a connection failure (exit 255) is a one-line `PacbEdgeError`."""
        try:
            proc = subprocess.run(
                self.ssh_argv(remote_argv), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise PacbEdgeError(f"{what} {self.host}: no answer within {timeout:.0f} s") from None
        if proc.returncode == 255:
            raise PacbEdgeError(f"{what} {self.host}: {_connection_error(_decode(proc.stderr), self.host)}")
        return proc

    def run(self, remote_argv: Sequence[str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command on the host and return it with text stdout/stderr; a connection failure (exit 255) or
        timeout is a one-line `PacbEdgeError`, and so is a non-zero exit when `check`."""
        proc = self._ssh(remote_argv, "ssh", timeout)
        proc.stdout, proc.stderr = _decode(proc.stdout), _decode(proc.stderr)
        if check and proc.returncode != 0:
            raise PacbEdgeError(
                f"ssh {self.host}: remote command failed (exit {proc.returncode}): "
                f"{_last_line(proc.stderr) or _last_line(proc.stdout)}"
            )
        return proc

    def upload(
        self,
        files: Mapping[str, str | Path],
        remote_dir: str,
        timeout: float = 600,
        marker: tuple[str, str] | None = None,
    ) -> int:
        """Copy local files to `remote_dir/<name>` for each `name -> local path` (names are relative POSIX paths;
        a local folder only creates that folder). Existing remote files not named here are left alone.

        `marker=(name, text)`: remove `remote_dir/name` first and write `text` into it once every file has
        arrived, so `marker_matches` is true only after a complete upload. Returns the bytes sent."""
        remote_dir = remote_path(remote_dir)
        if marker is not None:
            _relative_name(marker[0])
            if "/" in marker[0] or "\n" in marker[1]:
                raise PacbEdgeError(f"upload marker {marker[0]!r} must be a plain file name with one line of text")
        with tempfile.TemporaryFile(prefix="pacb_upload_") as stream:
            with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT, dereference=True) as tar:
                for name, local in files.items():
                    arcname = _relative_name(name)
                    try:
                        info = tar.gettarinfo(str(local), arcname=arcname)
                    except OSError as e:
                        raise PacbEdgeError(f"cannot read {local}: {e.strerror or e}") from None
                    if not (info.isfile() or info.isdir()):
                        raise PacbEdgeError(f"{local} is neither a file nor a folder")
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if info.isfile():
                        with open(local, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
            sent = stream.tell()
            stream.seek(0)
            if marker is None:
                argv = ["sh", "-c", _UNTAR_SCRIPT, "sh", remote_dir]
            else:
                argv = ["sh", "-c", _UNTAR_MARK_SCRIPT, "sh", remote_dir, marker[0], marker[1]]
            proc = self._ssh(argv, "copy to", timeout, stdin=stream)
        if proc.returncode != 0:
            why = _last_line(_decode(proc.stderr)) or f"exit {proc.returncode}"
            raise PacbEdgeError(f"copy to {self.host}:{remote_dir} failed: {why}")
        return sent

    def marker_matches(self, remote_dir: str, name: str, text: str, timeout: float = 60) -> bool:
        """True when `remote_dir/name` exists and holds exactly `text` (one ssh command)."""
        proc = self.run(["sh", "-c", _MARKER_SCRIPT, "sh", remote_path(remote_dir), name, text], timeout=timeout)
        return proc.stdout.strip() == "yes"

    def copy_to(self, local_paths: Sequence[str | Path], remote_dir: str, timeout: float = 600) -> None:
        """Copy files or folders (recursively) into `remote_dir`, creating it; each keeps its base name."""
        files: dict[str, Path] = {}
        for p in map(Path, local_paths):
            if not p.exists():
                raise PacbEdgeError(f"cannot copy {p}: it does not exist")
            files[p.name] = p
            if p.is_dir():
                for sub in sorted(p.rglob("*")):
                    files[posixpath.join(p.name, *sub.relative_to(p).parts)] = sub
        self.upload(files, remote_dir, timeout=timeout)

    def fetch(self, remote_file: str, local_path: str | Path, timeout: float = 600) -> None:
        """Copy one remote file to `local_path` (written whole or not at all)."""
        local_path = Path(local_path)
        fd, tmp = tempfile.mkstemp(prefix=f".{local_path.name}.", suffix=".tmp", dir=local_path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                proc = self._ssh(["cat", "--", remote_path(remote_file)], "copy from", timeout, stdout=out)
            if proc.returncode != 0:
                why = _last_line(_decode(proc.stderr)) or f"exit {proc.returncode}"
                raise PacbEdgeError(f"copy from {self.host}:{remote_file} failed: {why}")
            os.replace(tmp, local_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _relative_name(name: str) -> str:
    norm = posixpath.normpath(str(name))
    if norm.startswith("/") or norm == "." or norm == ".." or norm.startswith("../"):
        raise PacbEdgeError(f"upload name {name!r} must be a relative path inside the remote folder")
    return norm


def _connection_error(stderr: str, host: str) -> str:
    """A one-line reason for an ssh exit 255, with the fix for host-key problems."""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return (
            "host key verification failed: the host's key does not match the one in known_hosts. If the "
            f"device was reinstalled, check its new key, remove the old one with `ssh-keygen -R {host}` and "
            "connect once by hand"
        )
    if "Host key verification failed" in stderr:
        return (
            f"host key verification failed: {host} is not in known_hosts (or its key changed); connect once "
            f"with `ssh {host}` to check and accept its key"
        )
    return _last_line(stderr) or "connection failed"


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PacbEdgeError(f"'{name}' is not installed (OpenSSH client needed: apt-get install openssh-client)")
    return path


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""
