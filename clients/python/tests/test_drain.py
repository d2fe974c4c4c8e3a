"""Drain, on a daemon of its own (a drained daemon takes no task again)."""
from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest

from kioskd import KioskdError, TaskState
from kioskd.testing import KioskdProcess

from conftest import start_daemon, stop_daemon


@pytest.fixture(scope="module")
def draining_daemon() -> Iterator[KioskdProcess]:
    process = start_daemon(displays="630-639", ports="30300-30399")
    yield process
    stop_daemon(process)


def test_a_drained_daemon_takes_no_new_task_and_running_ones_go_on(draining_daemon: KioskdProcess) -> None:
    with draining_daemon.client() as client:
        task = client.create_task("about:blank", wait=True)
        assert task.state is TaskState.RUNNING
        drained = client.drain()
        assert drained.status == "draining" and drained.active == 1 and drained.queued == 0
        assert client.health().status == "draining"
        capacity = client.capacity()
        assert capacity.draining is True and capacity.active == 1
        assert httpx.get(draining_daemon.public_url + "/health").status_code == 503, "the load balancer sees it"

        started = time.monotonic()
        with pytest.raises(KioskdError) as refused:
            client.create_task("about:blank")
        assert (refused.value.status, refused.value.code) == (503, "draining")
        assert time.monotonic() - started < 2, "a refusal is not retried"

        assert client.get_task(task.task_id).state is TaskState.RUNNING, "the running task goes on"
        assert client.append_event(task.task_id, "agent.step").type == "agent.step"
        assert client.drain().status == "draining", "draining again is harmless"
        assert client.stop_task(task.task_id).state is TaskState.CANCELLED


def test_a_drain_with_wait_answers_when_the_last_task_has_ended(draining_daemon: KioskdProcess) -> None:
    with draining_daemon.client() as client:
        # The module's first test drained this daemon and stopped its task: nothing is left.
        done = client.drain(wait=5)
        assert (done.active, done.queued, done.drained) == (0, 0, True)
        with pytest.raises(KioskdError) as refused:
            client.drain(wait=3601)
        assert (refused.value.status, refused.value.code) == (400, "invalid_request")
