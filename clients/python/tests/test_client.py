"""The sync client against a real daemon: tasks boot real Chromiums."""
from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from kioskd import Kioskd, KioskdError, TaskState, new_task_id

from conftest import openapi_path
from proxy import Proxy


def created_total(client: Kioskd) -> int:
    match = re.search(r"^kioskd_tasks_created_total (\d+)$", client.metrics(), re.M)
    return int(match.group(1)) if match else 0


def sessions_of(client: Kioskd, task_id: str) -> int:
    return sum(1 for s in client.sessions() if s.id == task_id)


def test_the_daemon_health_capacity_and_the_document_it_serves(client: Kioskd) -> None:
    health = client.health()
    assert health.status == "ok" and health.store == "sqlite" and health.active >= 0
    capacity = client.capacity()
    assert capacity.max_sessions == 4 and capacity.draining is False
    assert capacity.available == capacity.max_sessions - capacity.active
    # The document the models are held to is the one the daemon serves.
    assert client.openapi() == json.loads(openapi_path().read_text())
    assert "# TYPE kioskd_" in client.metrics()
    assert isinstance(client.tree(), dict)
    assert isinstance(client.sessions(), list)
    # One host, not a cluster: the cluster's view is a clear 404, not an empty list.
    with pytest.raises(KioskdError) as single:
        client.cluster()
    assert single.value.status == 404 and single.value.code == "not_clustered"


def test_a_task_through_its_life(client: Kioskd) -> None:
    task = client.create_task("data:text/html,<title>py</title>client", metadata={"order": 42})
    assert re.fullmatch(r"[0-9a-f]{32}", task.task_id), "an id made by the client"
    assert task.state in (TaskState.QUEUED, TaskState.STARTING)
    assert task.request["metadata"] == {"order": 42}

    task = client.wait_task(task.task_id, timeout=60)
    assert task.state is TaskState.RUNNING, task
    assert task.session and task.session.cdp_url and task.session.cdp_url.startswith("http://127.0.0.1:")
    version = httpx.get(task.session.cdp_url + "/json/version", timeout=10).json()
    assert "Browser" in version, "the browser answers CDP"
    assert client.get_task(task.task_id) == task
    assert task.task_id in [t.task_id for t in client.list_tasks(state="running")]
    assert task.task_id not in [t.task_id for t in client.list_tasks(state=["completed", "failed"])]
    assert client.list_tasks(state=[]) == [], "an empty state list matches no task"
    assert len(client.list_tasks(limit=1)) == 1

    events = client.events(task.task_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "numbered without gaps"
    assert events[0].type == "state_changed" and events[0].data["to"] == "queued"
    # (The session may report more after the task runs: the order is the store's, not fixed.)
    running = [e for e in events if e.type == "state_changed" and e.data.get("to") == "running"]
    assert len(running) == 1 and running[0].seq <= task.last_event

    step = client.append_event(task.task_id, "agent.step", {"action": "click", "selector": "#buy"})
    assert step.seq > events[-1].seq and step.type == "agent.step"
    assert client.events(task.task_id, since=step.seq - 1)[:1] == [step]

    # A long poll holds the request until an event arrives, and gives up empty after `wait`.
    started = time.monotonic()
    assert client.events(task.task_id, since=step.seq + 1000, wait=1) == []
    assert time.monotonic() - started >= 0.9
    polled: list = []
    poller = threading.Thread(target=lambda: polled.extend(client.events(task.task_id, since=step.seq, wait=20)))
    started = time.monotonic()
    poller.start()
    second = client.append_event(task.task_id, "agent.step", {"action": "type"})
    poller.join(25)
    assert polled and polled[0].seq > step.seq and polled[0].seq <= second.seq, "woken by the next event"
    assert time.monotonic() - started < 15

    with pytest.raises(KioskdError) as waited:
        client.wait_task(task.task_id, until="final", timeout=1)
    assert waited.value.code == "wait_timeout" and waited.value.state == "running" and waited.value.status == 0

    view = client.viewer_token(task.task_id)
    control = client.viewer_token(task.task_id, role="control", ttl_s=60)
    assert view.role == "view" and control.role == "control" and control.task_id == task.task_id
    assert view.token.count(".") == 2, "a signed JWT"
    now = datetime.now(timezone.utc)
    assert timedelta(seconds=50) < control.expires_at - now <= timedelta(seconds=61)
    assert timedelta(seconds=290) < view.expires_at - now <= timedelta(seconds=301), "300 s by default"

    done = client.complete_task(task.task_id, reason="bought", result={"order": 42, "ok": True})
    assert done.state is TaskState.COMPLETED and done.ended_at is not None and done.reason == "bought"
    final = next(e for e in client.events(task.task_id, since=second.seq) if e.type == "state_changed")
    assert final.data["to"] == "completed" and final.data["result"] == {"order": 42, "ok": True}

    with pytest.raises(KioskdError) as again:
        client.complete_task(task.task_id)
    assert (again.value.status, again.value.code, again.value.state) == (409, "illegal_transition", "completed")
    assert again.value.message == "cannot complete a task that is completed"
    with pytest.raises(KioskdError) as late:
        client.viewer_token(task.task_id)
    assert (late.value.status, late.value.code, late.value.state) == (409, "task_finished", "completed")

    # The whole history as a stream, which ends because the task is final.
    streamed = [e.seq for e in client.stream_events(task.task_id)]
    assert streamed == list(range(1, streamed[-1] + 1)) and streamed[-1] >= final.seq


def test_fail_and_stop(client: Kioskd) -> None:
    failing = client.create_task("about:blank", wait=True)
    assert failing.state is TaskState.RUNNING
    failed = client.fail_task(failing.task_id, reason="the agent gave up")
    assert failed.state is TaskState.FAILED and failed.reason == "the agent gave up"

    stopping = client.create_task("about:blank")
    stopped = client.stop_task(stopping.task_id, reason="user closed the tab")
    assert stopped.state is TaskState.CANCELLED and stopped.reason == "user closed the tab"
    with pytest.raises(KioskdError) as again:
        client.stop_task(stopping.task_id)
    assert (again.value.status, again.value.code, again.value.state) == (409, "illegal_transition", "cancelled")
    early = client.create_task("about:blank")
    with pytest.raises(KioskdError) as not_yet:
        client.complete_task(early.task_id)
    # Only a running task completes: this one is still starting (or queued).
    assert not_yet.value.status == 409 and not_yet.value.state in ("queued", "starting")
    client.stop_task(early.task_id)


BAD_REQUESTS = [
    ("file: URL", lambda c: c.create_task("file:///etc/passwd"), 400, "invalid_request", "url"),
    ("narrow", lambda c: c.create_task("about:blank", width=100), 400, "invalid_request", "width"),
    ("id with a leading '-'", lambda c: c.create_task("about:blank", task_id="-x"), 400, "invalid_request", "task_id"),
    ("id too long", lambda c: c.create_task("about:blank", task_id="x" * 65), 400, "invalid_request", "task_id"),
    ("unknown input", lambda c: c.create_task("about:blank", input="admin"), 400, "invalid_request", "input"),
    ("zero timeout", lambda c: c.create_task("about:blank", timeout_s=0), 400, "invalid_request", "timeout_s"),
    ("big metadata", lambda c: c.create_task("about:blank", metadata={"x": "y" * 20000}), 413, "field_too_large", "metadata"),
    ("limit 0", lambda c: c.list_tasks(limit=0), 400, "invalid_request", "limit"),
    ("unknown state", lambda c: c.list_tasks(state="paused"), 400, "invalid_request", "paused"),
    ("wait over 25", lambda c: c.events("nope", wait=26), 400, "invalid_request", "wait"),
    ("short token", lambda c: c.viewer_token("nope", ttl_s=5), 400, "invalid_request", "ttl_s"),
    ("unknown role", lambda c: c.viewer_token("nope", role="admin"), 400, "invalid_request", "role"),
    ("event type", lambda c: c.append_event("nope", "Not A Type"), 400, "invalid_request", "type"),
    ("empty reason", lambda c: c.stop_task("nope", reason=""), 400, "invalid_request", "reason"),
]


@pytest.mark.parametrize("name,call,status,code,names", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_a_bad_request_is_a_KioskdError_naming_the_field(client: Kioskd, name, call, status, code, names) -> None:
    before = len(client.list_tasks(limit=1000))
    started = time.monotonic()
    with pytest.raises(KioskdError) as error:
        call(client)
    assert (error.value.status, error.value.code) == (status, code), error.value
    assert names in error.value.message, error.value.message
    assert time.monotonic() - started < 2, "not repeated: the daemon answered"
    assert len(client.list_tasks(limit=1000)) == before, "nothing stored"


UNKNOWN_TASK = [
    ("get", lambda c: c.get_task("no-such-task")),
    ("wait", lambda c: c.wait_task("no-such-task")),
    ("stop", lambda c: c.stop_task("no-such-task")),
    ("complete", lambda c: c.complete_task("no-such-task")),
    ("fail", lambda c: c.fail_task("no-such-task")),
    ("events", lambda c: c.events("no-such-task")),
    ("long poll", lambda c: c.events("no-such-task", wait=5)),
    ("append", lambda c: c.append_event("no-such-task", "agent.step")),
    ("token", lambda c: c.viewer_token("no-such-task")),
    ("stream", lambda c: list(c.stream_events("no-such-task"))),
    ("an id that is a path", lambda c: c.get_task("x/stop")),
]


@pytest.mark.parametrize("name,call", UNKNOWN_TASK, ids=[u[0] for u in UNKNOWN_TASK])
def test_an_unknown_task_is_404(client: Kioskd, name, call) -> None:
    started = time.monotonic()
    with pytest.raises(KioskdError) as error:
        call(client)
    assert (error.value.status, error.value.code) == (404, "task_not_found"), error.value
    assert time.monotonic() - started < 2


def test_a_repeated_create_returns_the_same_task_and_another_request_with_its_id_is_409(client: Kioskd) -> None:
    task_id = new_task_id()
    before = created_total(client)
    first = client.create_task("about:blank", task_id=task_id, metadata={"try": 1})
    again = client.create_task("about:blank", task_id=task_id, metadata={"try": 1}, wait=True)
    assert again.task_id == task_id and again.created_at == first.created_at and again.state is TaskState.RUNNING
    assert created_total(client) == before + 1 and sessions_of(client, task_id) == 1
    with pytest.raises(KioskdError) as reused:
        client.create_task("about:blank", task_id=task_id, metadata={"try": 2})
    assert (reused.value.status, reused.value.code, reused.value.state) == (409, "task_id_reused", "running")
    client.stop_task(task_id)


def test_a_create_whose_answer_is_lost_is_sent_again_and_starts_one_browser(client: Kioskd, proxy: Proxy) -> None:
    before = created_total(client)
    proxy.swallow_next(b"POST /v1/tasks")
    with Kioskd(proxy.socket) as through:
        task = through.create_task("about:blank")
    creates = [r for r in proxy.requests() if r.startswith(b"POST /v1/tasks")]
    assert len(creates) == 2, "the first answer was lost and the create sent again"
    bodies = [json.loads(r.split(b"\r\n\r\n", 1)[1]) for r in creates]
    assert bodies[0] == bodies[1] and bodies[0]["task_id"] == task.task_id, "the same task_id both times"
    assert created_total(client) == before + 1, "one task"
    assert client.wait_task(task.task_id, timeout=60).state is TaskState.RUNNING
    assert sessions_of(client, task.task_id) == 1, "one browser"
    client.stop_task(task.task_id)


def test_the_event_stream_resumes_after_the_connection_drops(client: Kioskd, proxy: Proxy) -> None:
    task = client.create_task("about:blank", wait=True)
    seen: list[int] = []
    with Kioskd(proxy.socket) as through:
        stream = through.stream_events(task.task_id)
        for event in stream:
            seen.append(event.seq)
            if event.seq == task.last_event:
                break
        assert proxy.drop_all() == 1, "the stream's connection, dropped mid-stream"
        # Events stored while the client is cut off arrive after it reconnects.
        appended = [client.append_event(task.task_id, "agent.step", {"n": n}).seq for n in range(3)]
        client.complete_task(task.task_id)
        seen += [event.seq for event in stream]
    assert seen == list(range(1, seen[-1] + 1)), "every event once, in order"
    assert set(appended) <= set(seen)
    streams = [r for r in proxy.requests() if b"text/event-stream" in r]
    assert len(streams) >= 2
    resumed = re.search(rb"(?i)last-event-id: (\d+)", streams[1])
    # From the last event the client had read off the dropped connection (one it had not
    # handed out yet may have been in its buffer), not from the start.
    assert resumed and task.last_event <= int(resumed.group(1)) < seen[-1], streams[1]
    assert client.get_task(task.task_id).state is TaskState.COMPLETED


def test_over_tcp_with_a_base_url(client: Kioskd, tcp_proxy: Proxy) -> None:
    with Kioskd(base_url=tcp_proxy.base_url) as remote:
        assert remote.health().status == "ok"
        assert [t.task_id for t in remote.list_tasks(limit=5)] == [t.task_id for t in client.list_tasks(limit=5)]
        with pytest.raises(KioskdError) as error:
            remote.get_task("no-such-task")
        assert error.value.status == 404


def test_no_daemon_is_a_KioskdError_without_a_status(daemon) -> None:
    with Kioskd(daemon.directory + "/nothing.sock", retries=1) as nowhere:
        with pytest.raises(KioskdError) as error:
            nowhere.health()
    assert (error.value.status, error.value.code) == (0, "unreachable")
    assert "nothing.sock" in error.value.message
