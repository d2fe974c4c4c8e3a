"""A real `kioskd serve` for tests of code that uses the client (this package's own tests and
examples/fastapi's use it): a temporary directory with its config, state, runtime directory
and control socket, a loopback port for the public listener, ready once the control socket
and the public listener answer.

    with KioskdProcess("/usr/local/bin/kioskd") as daemon:
        with daemon.client() as kioskd:
            kioskd.create_task("about:blank", wait=True)

Sessions boot real Chromiums, so kioskd's own needs apply: run as root (the sessions run as
`sessions.user`, kioskd by default; kioskd's scripts/setup.sh creates it) with Xvfb, Openbox,
x11vnc and Chromium installed. Give each daemon that may run beside another its own
`displays` and `ports` ranges, with the ports below the kernel's ephemeral range (Linux:
32768-60999), where an outgoing connection could take one before the session binds it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

import httpx

from .aio import AsyncKioskd
from .client import Kioskd

__all__ = ["KioskdProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KioskdProcess:
    def __init__(self, binary: str, *, displays: str = "600-639", ports: str = "30000-30499",
                 max_sessions: int = 4, config: str = "", parent: str = "/tmp") -> None:
        """`config`: more YAML appended to the generated file (top-level keys not generated
        here: tasks, state, runtime, control, public, shutdown and sessions are)."""
        if not os.access(binary, os.X_OK):
            raise FileNotFoundError(f"no kioskd binary at {binary}: build it (swift build --product kioskd)")
        self.binary = binary
        # Sessions run as another user, who must be able to reach runtime.dir: 0711.
        self.directory = tempfile.mkdtemp(prefix="kioskd-py-", dir=parent)
        os.chmod(self.directory, 0o711)
        self.socket = os.path.join(self.directory, "run", "control.sock")
        self.public_port = free_port()
        self.public_url = f"http://127.0.0.1:{self.public_port}"
        self.config_path = os.path.join(self.directory, "kioskd.yaml")
        self.log_path = os.path.join(self.directory, "kioskd.log")
        with open(self.config_path, "w") as f:
            f.write(
                f"state:\n  dir: {self.directory}/state\n"
                f"runtime:\n  dir: {self.directory}/run\n"
                f"control:\n  socket: {self.socket}\n"
                f"public:\n  listen: 127.0.0.1:{self.public_port}\n"
                f"shutdown:\n  timeout: 10s\n"
                f"tasks:\n  max_sessions: {max_sessions}\n"
                f"sessions:\n  displays: {displays}\n  ports: {ports}\n"
                + config
            )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> "KioskdProcess":
        """Starts `kioskd serve` and returns once its control socket answers GET /v1/health
        and its public listener GET /health. After `stop()`, starts it again on the same
        directory, store and port (a restart)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("kioskd is running: stop() it first")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "KIOSKD_LOG_FORMAT": "text"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([self.binary, "serve", "--config", self.config_path], env=env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with Kioskd(self.socket, retries=0, timeout=5) as control:
            while not (self._answers(control) and self._public_answers()):
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"kioskd did not answer within {timeout:g} s:\n{self.log()}")
                # The pause between connection attempts is a wait on the daemon's exit.
                try:
                    code = self.process.wait(timeout=0.02)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError(f"kioskd exited with {code} before it was ready:\n{self.log()}")
        return self

    def _answers(self, control: Kioskd) -> bool:
        try:
            return control.health().status == "ok"
        except Exception:
            return False

    def _public_answers(self) -> bool:
        try:
            return httpx.get(self.public_url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, **options: Any) -> Kioskd:
        return Kioskd(self.socket, **options)

    def async_client(self, **options: Any) -> AsyncKioskd:
        return AsyncKioskd(self.socket, **options)

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-20000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (sessions stop, then the daemon); SIGKILL if it is still there after
        `timeout`. Returns its exit code (0 after a clean stop)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "KioskdProcess":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.remove()
