"""A real OpenSSH server on 127.0.0.1 for tests: temp host key, temp user key, pinned known_hosts.

`SSHServer` starts `sshd -D -e -f <temp sshd_config>` at a free port as the current user and writes client
config files (`ssh -F`) that pin its host key with `StrictHostKeyChecking yes`. Host-key checking is never
turned off. Not a conftest: test files import it and wrap it in their own fixtures.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
HOST_ALIAS = "jetson-test"
START_TIMEOUT_S = 15.0


def sshd_missing_reason() -> str | None:
    """Why an sshd-backed test cannot run here, or None when it can."""
    if not SSHD.is_file():
        return f"{SSHD} is absent (Debian: apt-get install openssh-server openssh-client)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (Debian: apt-get install openssh-client)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    """A new passphrase-less ed25519 key pair at `path` (+ `.pub`); returns `path`."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def _public_key(path: Path) -> str:
    """`type base64` of a private key's `.pub` file, without the comment."""
    return " ".join(Path(str(path) + ".pub").read_text().split()[:2])


def _ensure_privsep_dir() -> None:
    """sshd started as root refuses to run without its privilege separation folder (as non-root it needs none)."""
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)


class SSHServer:
    """A running sshd that accepts `user_key` for the current user. Use as a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.host_key = self.root / "ssh_host_ed25519_key"
        self.user_key = self.root / "id_ed25519"
        self.authorized_keys = self.root / "authorized_keys"
        self.known_hosts = self.root / "known_hosts"
        self.log = self.root / "sshd.log"

    def start(self) -> SSHServer:
        _ensure_privsep_dir()
        keygen(self.host_key)
        keygen(self.user_key)
        self.authorized_keys.write_text(_public_key(self.user_key) + "\n")
        self.authorized_keys.chmod(0o600)
        for attempt in range(3):  # the free port can be taken between free_port() and sshd's bind
            self.port = free_port()
            self.known_hosts.write_text(self.known_hosts_line(self.host_key))
            config = self.root / "sshd_config"
            config.write_text(
                "\n".join(
                    [
                        "ListenAddress 127.0.0.1",
                        f"Port {self.port}",
                        f"HostKey {self.host_key}",
                        f"PidFile {self.root / 'sshd.pid'}",
                        f"AuthorizedKeysFile {self.authorized_keys}",
                        f"AllowUsers {self.user}",
                        "PermitRootLogin prohibit-password",
                        "PubkeyAuthentication yes",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "UsePAM no",
                        "StrictModes no",
                        "PrintMotd no",
                        "LogLevel VERBOSE",
                        "Subsystem sftp internal-sftp",
                    ]
                )
                + "\n"
            )
            log = open(self.log, "ab")  # noqa: SIM115 - owned by the sshd process for its lifetime
            self.proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            if self._wait_ready():
                return self
            self.stop()
            if attempt == 2:
                raise RuntimeError(f"sshd did not start; its log:\n{self.log.read_text()[-2000:]}")
        return self

    def _wait_ready(self) -> bool:
        """True once the port answers with an SSH banner; False when sshd exits or the deadline passes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> SSHServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def known_hosts_line(self, host_key: Path) -> str:
        return f"[127.0.0.1]:{self.port} {_public_key(host_key)}\n"

    def client_config(
        self,
        name: str = "ssh_config",
        identity: Path | None = None,
        known_hosts: Path | None = None,
        port: int | None = None,
    ) -> Path:
        """An `ssh -F` file for `Host jetson-test` with a pinned known_hosts and `StrictHostKeyChecking yes`."""
        path = self.root / name
        path.write_text(
            "\n".join(
                [
                    f"Host {HOST_ALIAS}",
                    "    HostName 127.0.0.1",
                    f"    Port {port or self.port}",
                    f"    User {self.user}",
                    f"    IdentityFile {identity or self.user_key}",
                    "    IdentitiesOnly yes",
                    f"    UserKnownHostsFile {known_hosts or self.known_hosts}",
                    "    GlobalKnownHostsFile /dev/null",
                    "    StrictHostKeyChecking yes",
                    "    UpdateHostKeys no",
                ]
            )
            + "\n"
        )
        path.chmod(0o600)
        return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 for one test module (skipped, with the reason, where sshd is absent)."""
    reason = sshd_missing_reason()
    if reason:
        pytest.skip(reason)
    with SSHServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server
