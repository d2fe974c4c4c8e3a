"""examples/walkthrough.py, as a user runs it, against the daemon (the Swift tests run it too)."""
from __future__ import annotations

import pathlib
import subprocess
import sys

from kioskd.testing import KioskdProcess

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "walkthrough.py"


def test_the_walkthrough_passes_every_check(daemon: KioskdProcess) -> None:
    run = subprocess.run([sys.executable, str(EXAMPLE), "--socket", daemon.socket, "--url", "data:text/html,walkthrough"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ok   the task is cancelled" in run.stdout and "FAIL" not in run.stdout
