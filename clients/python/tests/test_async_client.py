"""The async client against a real daemon (anyio's pytest plugin, on asyncio)."""
from __future__ import annotations

import re
import time
from contextlib import aclosing

import anyio
import pytest

from kioskd import AsyncKioskd, KioskdError, TaskState, new_task_id

from proxy import Proxy

pytestmark = pytest.mark.anyio


async def created_total(client: AsyncKioskd) -> int:
    match = re.search(r"^kioskd_tasks_created_total (\d+)$", await client.metrics(), re.M)
    return int(match.group(1)) if match else 0


async def test_a_task_through_its_life(aclient: AsyncKioskd) -> None:
    assert (await aclient.health()).status == "ok"
    task = await aclient.create_task("about:blank", width=1024, height=768, input="view")
    assert task.request["width"] == 1024 and task.request["input"] == "view"
    task = await aclient.wait_task(task.task_id, timeout=60)
    assert task.state is TaskState.RUNNING and task.session and task.session.vnc_ws_path

    events = await aclient.events(task.task_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)) and len(events) >= task.last_event

    # A long poll woken by an event appended meanwhile.
    polled: list = []

    async def poll() -> None:
        polled.extend(await aclient.events(task.task_id, since=events[-1].seq, wait=20))

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(poll)
        step = await aclient.append_event(task.task_id, "agent.step", {"action": "scroll"})
    assert polled and events[-1].seq < polled[0].seq <= step.seq, "woken by the next event"
    assert time.monotonic() - started < 15

    token = await aclient.viewer_token(task.task_id, role="view", ttl_s=30)
    assert token.role == "view" and token.task_id == task.task_id

    with pytest.raises(KioskdError) as waited:
        await aclient.wait_task(task.task_id, until="final", timeout=1)
    assert (waited.value.code, waited.value.state) == ("wait_timeout", "running")

    done = await aclient.complete_task(task.task_id, result={"pages": 1})
    assert done.state is TaskState.COMPLETED
    assert (await aclient.wait_task(task.task_id, until="final")).state is TaskState.COMPLETED
    async with aclosing(aclient.stream_events(task.task_id, since=step.seq)) as stream:
        tail = [e async for e in stream]
    final = next(e for e in tail if e.type == "state_changed")
    assert final.data["to"] == "completed" and final.data["result"] == {"pages": 1}


async def test_errors(aclient: AsyncKioskd) -> None:
    with pytest.raises(KioskdError) as unknown:
        await aclient.get_task("no-such-task")
    assert (unknown.value.status, unknown.value.code) == (404, "task_not_found")
    with pytest.raises(KioskdError) as bad:
        await aclient.create_task("ftp://example.com/")
    assert (bad.value.status, bad.value.code) == (400, "invalid_request") and "url" in bad.value.message
    with pytest.raises(KioskdError) as no_stream:
        async with aclosing(aclient.stream_events("no-such-task")) as stream:
            async for _ in stream:
                pass
    assert no_stream.value.status == 404
    task = await aclient.create_task("about:blank")
    await aclient.stop_task(task.task_id)
    with pytest.raises(KioskdError) as conflict:
        await aclient.fail_task(task.task_id)
    assert (conflict.value.status, conflict.value.code, conflict.value.state) == (409, "illegal_transition", "cancelled")


async def test_concurrent_creates_with_one_id_start_one_browser(aclient: AsyncKioskd) -> None:
    task_id = new_task_id()
    before = await created_total(aclient)
    answers: list = []

    async def create() -> None:
        answers.append(await aclient.create_task("about:blank", task_id=task_id, wait=True))

    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(create)
    assert {(t.task_id, t.created_at) for t in answers} == {(task_id, answers[0].created_at)}
    assert all(t.state is TaskState.RUNNING for t in answers)
    assert await created_total(aclient) == before + 1
    assert sum(1 for s in await aclient.sessions() if s.id == task_id) == 1
    await aclient.stop_task(task_id)


async def test_the_event_stream_resumes_after_the_connection_drops(aclient: AsyncKioskd, proxy: Proxy) -> None:
    task = await aclient.create_task("about:blank", wait=True)
    seen: list[int] = []
    async with AsyncKioskd(proxy.socket) as through:
        async with aclosing(through.stream_events(task.task_id)) as stream:
            async for event in stream:
                seen.append(event.seq)
                if event.seq == task.last_event:
                    break
            assert proxy.drop_all() == 1
            appended = [(await aclient.append_event(task.task_id, "agent.step", {"n": n})).seq for n in range(3)]
            await aclient.stop_task(task.task_id, reason="done watching")
            seen += [event.seq async for event in stream]
    assert seen == list(range(1, seen[-1] + 1)) and set(appended) <= set(seen)
    streams = [r for r in proxy.requests() if b"text/event-stream" in r]
    resumed = re.search(rb"(?i)last-event-id: (\d+)", streams[1])
    # From the last event the client had read off the dropped connection (one it had not
    # handed out yet may have been in its buffer), not from the start.
    assert resumed and task.last_event <= int(resumed.group(1)) < seen[-1], streams[1]


async def test_no_daemon_is_a_KioskdError_without_a_status(daemon) -> None:
    async with AsyncKioskd(daemon.directory + "/nothing.sock", retries=1) as nowhere:
        with pytest.raises(KioskdError) as error:
            await nowhere.capacity()
    assert (error.value.status, error.value.code) == (0, "unreachable")
