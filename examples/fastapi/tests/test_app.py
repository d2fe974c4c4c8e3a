"""The reference API layer through FastAPI's TestClient, against a real daemon: the frontend's
path from start to a viewer on kioskd's public listener."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import re
import socket
import sys
import time
import uuid
from typing import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from kioskd.testing import KioskdProcess

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from app import Settings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def daemon() -> Iterator[KioskdProcess]:
    binary = os.environ.get("KIOSKD_BIN")
    if not binary:
        pytest.fail("set KIOSKD_BIN to a kioskd binary (scripts/test-python.sh does)", pytrace=False)
    process = KioskdProcess(binary, displays="640-659", ports="30400-30599").start()
    yield process
    code = process.stop()
    log = process.log()
    process.remove()
    assert code == 0, f"kioskd exited with {code}:\n{log}"


@pytest.fixture(scope="module")
def api(daemon: KioskdProcess) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(socket=daemon.socket, public_url=daemon.public_url))) as client:
        yield client


def created_total(daemon: KioskdProcess) -> int:
    with daemon.client() as kioskd:
        match = re.search(r"^kioskd_tasks_created_total (\d+)$", kioskd.metrics(), re.M)
    return int(match.group(1)) if match else 0


def poll_until_running(api: TestClient, task_id: str) -> list[dict]:
    """The frontend's poll loop (each request long-polls, so no sleep between them)."""
    events: list[dict] = []
    since = 0
    for _ in range(60):
        page = api.get(f"/api/v1/tasks/{task_id}/events", params={"since": since, "wait": 5})
        assert page.status_code == 200, page.text
        body = page.json()
        events += body["events"]
        since = body["next_since"]
        # The state is read after the events, so it can be ahead of them: wait for the event.
        if body["final"] or any(e["type"] == "state_changed" and e["data"]["to"] == "running" for e in events):
            return events
    raise AssertionError(f"task {task_id} never ran: {events}")


def open_viewer(ws_url: str) -> tuple[str, bytes]:
    """A viewer's WebSocket handshake on kioskd's public listener (as noVNC opens it), and the
    first frame's payload: the RFB greeting."""
    url = urlsplit(ws_url)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall((f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n")[0].decode()
        if " 101 " not in status:
            return status, rest
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        headers = dict((k.strip().lower(), v.strip()) for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:]))
        assert headers[b"sec-websocket-accept"] == accept
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
            rest += s.recv(4096)
        assert rest[0] == 0x82, "a final binary frame"
        return status, rest[2:2 + (rest[1] & 0x7F)]


def test_start_answers_at_once_and_the_frontend_gets_to_a_viewer(api: TestClient, daemon: KioskdProcess) -> None:
    started = time.monotonic()
    answer = api.post("/api/v1/tasks/start", json={"url": "data:text/html,<title>api</title>layer", "metadata": {"user": "u1"}})
    assert answer.status_code == 202, answer.text
    assert time.monotonic() - started < 5, "a task id at once, long before the browser is up"
    task_id = answer.json()["task_id"]
    assert answer.json()["state"] in ("queued", "starting")

    events = poll_until_running(api, task_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "every event once, in order"
    assert [e["data"]["to"] for e in events if e["type"] == "state_changed"] == ["queued", "starting", "running"]
    assert api.get(f"/api/v1/tasks/{task_id}").json()["state"] == "running"

    viewer = api.post(f"/api/v1/tasks/{task_id}/viewer-token", json={"role": "view"})
    assert viewer.status_code == 200, viewer.text
    body = viewer.json()
    assert body["role"] == "view" and body["ws_url"].startswith(f"ws://127.0.0.1:{daemon.public_port}/api/v1/vnc/ws?task_id={task_id}&token=")
    assert body["viewer_url"].startswith(f"{daemon.public_url}/viewer?task_id={task_id}&token=")
    status, greeting = open_viewer(body["ws_url"])
    assert " 101 " in status and greeting == b"RFB 003.008\n", (status, greeting)
    # The token is what lets it in.
    status, refusal = open_viewer(body["ws_url"].replace("token=", "token=x"))
    assert " 401 " in status and json.loads(refusal)["error"]["code"], (status, refusal)

    stopped = api.post(f"/api/v1/tasks/{task_id}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "cancelled" and stopped.json()["final"] is True
    last = api.get(f"/api/v1/tasks/{task_id}/events", params={"since": events[-1]["seq"]}).json()
    seen = [(e["type"], e["data"].get("to")) for e in last["events"]]
    assert last["state"] == "cancelled" and ("state_changed", "cancelled") in seen
    assert ("viewer_connected", None) in seen, "kioskd saw the viewer"


def test_the_event_stream_variant(api: TestClient) -> None:
    task_id = api.post("/api/v1/tasks/start", json={"url": "about:blank"}).json()["task_id"]
    api.post(f"/api/v1/tasks/{task_id}/stop")
    # The stream ends because the task is final.
    with api.stream("GET", f"/api/v1/tasks/{task_id}/events/stream") as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        text = answer.read().decode()
    events = [block for block in text.split("\n\n") if block.strip() and not block.startswith(":")]
    ids = [int(re.search(r"^id: (\d+)$", block, re.M).group(1)) for block in events]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 2
    first = json.loads(re.search(r"^data: (.*)$", events[0], re.M).group(1))
    assert first["seq"] == 1 and first["type"] == "state_changed" and re.search(r"^event: state_changed$", events[0], re.M)
    last = json.loads(re.search(r"^data: (.*)$", events[-1], re.M).group(1))
    assert any(json.loads(re.search(r"^data: (.*)$", b, re.M).group(1))["data"].get("to") == "cancelled" for b in events), last

    # An EventSource reconnecting sends Last-Event-ID: the stream goes on after it.
    with api.stream("GET", f"/api/v1/tasks/{task_id}/events/stream", headers={"Last-Event-ID": "1"}) as answer:
        resumed = re.findall(r"^id: (\d+)$", answer.read().decode(), re.M)
    assert [int(i) for i in resumed] == ids[1:]


def test_a_retried_start_with_an_idempotency_key_starts_one_browser(api: TestClient, daemon: KioskdProcess) -> None:
    key = str(uuid.uuid4())
    before = created_total(daemon)
    first = api.post("/api/v1/tasks/start", json={"url": "about:blank"}, headers={"Idempotency-Key": key})
    again = api.post("/api/v1/tasks/start", json={"url": "about:blank"}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert first.json()["task_id"] == again.json()["task_id"] == key
    assert created_total(daemon) == before + 1
    other = api.post("/api/v1/tasks/start", json={"url": "https://example.com/"}, headers={"Idempotency-Key": key})
    assert other.status_code == 409 and other.json()["error"]["code"] == "task_id_reused"
    api.post(f"/api/v1/tasks/{key}/stop")


def test_errors_are_kioskds_with_their_status(api: TestClient) -> None:
    for method, path in [("GET", "/api/v1/tasks/nope"), ("GET", "/api/v1/tasks/nope/events"),
                         ("GET", "/api/v1/tasks/nope/events/stream"), ("POST", "/api/v1/tasks/nope/stop")]:
        answer = api.request(method, path)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "task_not_found", (path, answer.text)
    answer = api.post("/api/v1/tasks/nope/viewer-token", json={"role": "view"})
    assert answer.status_code == 404
    bad = api.post("/api/v1/tasks/start", json={"url": "file:///etc/passwd"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request" and "url" in bad.json()["error"]["message"]
    assert api.post("/api/v1/tasks/start", json={}).status_code == 422, "FastAPI's own validation"
    assert api.post("/api/v1/tasks/start", json={"url": "about:blank"}, headers={"Idempotency-Key": "a/b"}).status_code == 422

    task_id = api.post("/api/v1/tasks/start", json={"url": "about:blank"}).json()["task_id"]
    api.post(f"/api/v1/tasks/{task_id}/stop")
    late = api.post(f"/api/v1/tasks/{task_id}/viewer-token", json={"role": "control"})
    assert late.status_code == 409 and late.json()["error"] == {
        "code": "task_finished", "message": f"task '{task_id}' is cancelled: no viewer can join it", "state": "cancelled"}
    again = api.post(f"/api/v1/tasks/{task_id}/stop")
    assert again.status_code == 409 and again.json()["error"]["state"] == "cancelled"


def test_kioskd_away_is_a_502(tmp_path: pathlib.Path) -> None:
    with TestClient(create_app(Settings(socket=str(tmp_path / "nothing.sock")))) as client:
        answer = client.get("/api/v1/tasks/x")
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "kioskd_unreachable"
