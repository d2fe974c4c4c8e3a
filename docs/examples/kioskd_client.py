#!/usr/bin/env python3
"""kioskd's control API from Python, the way a FastAPI layer would use it: httpx over the Unix
socket. Run against a live daemon it walks a task through its life and checks each answer:

    python3 kioskd_client.py --socket /run/kioskd/control.sock --url https://example.com/

Exit status 0 when every step answered as documented (GET /v1/openapi.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid

import httpx


class KioskdError(Exception):
    """An API error: the HTTP status and the body's {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Kioskd:
    """A small client of the control API. Every method returns the decoded JSON."""

    def __init__(self, socket: str, timeout: float = 30.0):
        # The host name is not used for routing: the transport is the Unix socket.
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url="http://kioskd", timeout=timeout)

    def _call(self, method: str, path: str, **kwargs):
        answer = self.http.request(method, path, **kwargs)
        if answer.status_code >= 400:
            error = answer.json().get("error", {})
            raise KioskdError(answer.status_code, error.get("code", "?"), error.get("message", answer.text))
        return answer.json()

    def health(self) -> dict:
        return self._call("GET", "/v1/health")

    def start_task(self, url: str, task_id: str | None = None, wait: bool = False, **fields) -> dict:
        body = {"url": url, **fields}
        if task_id:
            body["task_id"] = task_id
        return self._call("POST", "/v1/tasks", params={"wait": "true"} if wait else None, json=body)

    def task(self, task_id: str) -> dict:
        return self._call("GET", f"/v1/tasks/{task_id}")

    def events(self, task_id: str, since: int = 0, wait: int | None = None) -> list[dict]:
        params = {"since": since}
        if wait is not None:
            params["wait"] = wait
        return self._call("GET", f"/v1/tasks/{task_id}/events", params=params)

    def append_event(self, task_id: str, type: str, data: dict) -> dict:
        return self._call("POST", f"/v1/tasks/{task_id}/events", json={"type": type, "data": data})

    def viewer_token(self, task_id: str, role: str = "view", ttl_s: int = 300) -> dict:
        return self._call("POST", f"/v1/tasks/{task_id}/viewer-token", json={"role": role, "ttl_s": ttl_s})

    def stop(self, task_id: str, reason: str | None = None) -> dict:
        return self._call("POST", f"/v1/tasks/{task_id}/stop", json={"reason": reason} if reason else None)


def check(condition: bool, what: str) -> None:
    print(("ok   " if condition else "FAIL ") + what, flush=True)
    if not condition:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default="/run/kioskd/control.sock")
    parser.add_argument("--url", default="about:blank")
    args = parser.parse_args()
    kioskd = Kioskd(args.socket)

    check(kioskd.health()["status"] == "ok", "the daemon is healthy")
    task_id = "py-" + uuid.uuid4().hex[:12]
    task = kioskd.start_task(args.url, task_id=task_id, wait=True, metadata={"correlation_id": task_id})
    check(task["state"] == "running", f"task {task_id} is running")
    check(task["session"]["cdp_url"].startswith("http://127.0.0.1:"), "it carries the CDP URL: " + task["session"]["cdp_url"])
    version = httpx.get(task["session"]["cdp_url"] + "/json/version", timeout=10).json()
    check("Browser" in version, "the browser answers CDP: " + version["Browser"])

    again = kioskd.start_task(args.url, task_id=task_id, metadata={"correlation_id": task_id})
    check(again["task_id"] == task_id and again["created_at"] == task["created_at"], "a retried start returns the same task")

    seen = kioskd.events(task_id)
    check([e["seq"] for e in seen] == list(range(1, len(seen) + 1)), f"{len(seen)} events, numbered without gaps")
    step = kioskd.append_event(task_id, "agent.step", {"action": "click", "selector": "#buy"})
    check(step["seq"] == seen[-1]["seq"] + 1, "an agent step is stored as the next event")
    check(kioskd.events(task_id, since=seen[-1]["seq"])[0]["data"]["action"] == "click", "events since N return it")

    token = kioskd.viewer_token(task_id, role="control", ttl_s=60)
    check(token["role"] == "control" and token["token"].count(".") == 2, "a viewer token (a signed JWT) for the control role")

    try:
        kioskd.start_task("file:///etc/passwd")
        check(False, "a file: URL is refused")
    except KioskdError as e:
        check(e.status == 400 and e.code == "invalid_request", "a file: URL is refused: " + e.message)

    stopped = kioskd.stop(task_id, reason="example done")
    check(stopped["state"] == "cancelled", "the task is cancelled")
    try:
        kioskd.stop(task_id)
        check(False, "a second stop is a conflict")
    except KioskdError as e:
        check(e.status == 409 and "cancelled" in e.message, "a second stop is a conflict: " + e.message)
    print(json.dumps({"task_id": task_id, "events": kioskd.task(task_id)["last_event"]}))


if __name__ == "__main__":
    main()
