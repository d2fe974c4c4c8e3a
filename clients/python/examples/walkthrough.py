#!/usr/bin/env python3
"""A task through its life with the kioskd package, checking each answer as it goes:

    python3 walkthrough.py --socket /run/kioskd/control.sock --url https://example.com/

Exit status 0 when every step answered as documented. Run from a checkout, it uses the
package beside it (../src), installed or not; elsewhere: pip install ./clients/python.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
if (SOURCE / "kioskd" / "__init__.py").exists():
    sys.path.insert(0, str(SOURCE))

import httpx  # noqa: E402

from kioskd import Kioskd, KioskdError, TaskState  # noqa: E402


def check(condition: bool, what: str) -> None:
    print(("ok   " if condition else "FAIL ") + what, flush=True)
    if not condition:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=None, help="the control socket (default: $KIOSKD_SOCKET or /run/kioskd/control.sock)")
    parser.add_argument("--url", default="about:blank")
    args = parser.parse_args()

    with Kioskd(args.socket) as kioskd:
        check(kioskd.health().status == "ok", "the daemon is healthy")
        task_id = "py-" + uuid.uuid4().hex[:12]
        task = kioskd.create_task(args.url, task_id=task_id, wait=True, metadata={"correlation_id": task_id})
        check(task.state is TaskState.RUNNING, f"task {task_id} is running")
        cdp_url = task.session.cdp_url if task.session else ""
        check(bool(cdp_url) and cdp_url.startswith("http://127.0.0.1:"), f"it carries the CDP URL: {cdp_url}")
        version = httpx.get(f"{cdp_url}/json/version", timeout=10).json()
        check("Browser" in version, "the browser answers CDP: " + version["Browser"])

        again = kioskd.create_task(args.url, task_id=task_id, metadata={"correlation_id": task_id})
        check(again.task_id == task_id and again.created_at == task.created_at, "a retried start returns the same task")

        seen = kioskd.events(task_id)
        check([e.seq for e in seen] == list(range(1, len(seen) + 1)), f"{len(seen)} events, numbered without gaps")
        step = kioskd.append_event(task_id, "agent.step", {"action": "click", "selector": "#buy"})
        check(step.seq > seen[-1].seq, "an agent step is stored after them")
        check(any(e.seq == step.seq and e.data["action"] == "click" for e in kioskd.events(task_id, since=seen[-1].seq)),
              "events since N return it")

        token = kioskd.viewer_token(task_id, role="control", ttl_s=60)
        check(token.role == "control" and token.token.count(".") == 2, "a viewer token (a signed JWT) for the control role")

        try:
            kioskd.create_task("file:///etc/passwd")
            check(False, "a file: URL is refused")
        except KioskdError as e:
            check(e.status == 400 and e.code == "invalid_request", "a file: URL is refused: " + e.message)

        stopped = kioskd.stop_task(task_id, reason="example done")
        check(stopped.state is TaskState.CANCELLED, "the task is cancelled")
        try:
            kioskd.stop_task(task_id)
            check(False, "a second stop is a conflict")
        except KioskdError as e:
            check(e.status == 409 and e.state == "cancelled", "a second stop is a conflict: " + e.message)
        streamed = [e.seq for e in kioskd.stream_events(task_id)]
        check(streamed == list(range(1, len(streamed) + 1)), f"the event stream replays all {len(streamed)} and ends")
        print(json.dumps({"task_id": task_id, "events": kioskd.get_task(task_id).last_event}))


if __name__ == "__main__":
    main()
