"""A daemon restart under a client, on a daemon of its own: the event stream outlasts it."""
from __future__ import annotations

import threading
from typing import Iterator

import pytest

from kioskd import Event, TaskState
from kioskd.testing import KioskdProcess

from conftest import start_daemon, stop_daemon


@pytest.fixture(scope="module")
def restarted_daemon() -> Iterator[KioskdProcess]:
    process = start_daemon(displays="660-669", ports="30600-30699")
    yield process
    stop_daemon(process)


def test_the_event_stream_resumes_across_a_daemon_restart(restarted_daemon: KioskdProcess) -> None:
    daemon = restarted_daemon
    with daemon.client() as client:
        task = client.create_task("about:blank", wait=True)
        assert task.state is TaskState.RUNNING
    seen: list[Event] = []
    caught_up = threading.Event()
    failure: list[BaseException] = []

    def follow() -> None:
        try:
            with daemon.client() as follower:
                for event in follower.stream_events(task.task_id):
                    seen.append(event)
                    if event.seq >= task.last_event:
                        caught_up.set()
        except BaseException as e:  # reported by the test below
            failure.append(e)
        finally:
            caught_up.set()

    reader = threading.Thread(target=follow)
    reader.start()
    assert caught_up.wait(30)
    # A stop and a start: the stream breaks, the client reconnects (connection refused until
    # the socket is back), and the new daemon marks the task interrupted, which ends it.
    assert daemon.stop() == 0
    daemon.start()
    reader.join(60)
    assert not reader.is_alive() and not failure, failure
    seqs = [e.seq for e in seen]
    assert seqs == list(range(1, seqs[-1] + 1)), "every event once, across the restart"
    assert seen[-1].type == "state_changed" and seen[-1].data["to"] == "interrupted"
    with daemon.client() as client:
        assert client.get_task(task.task_id).state is TaskState.INTERRUPTED
