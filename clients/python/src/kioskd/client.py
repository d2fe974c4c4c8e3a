"""The synchronous client."""
from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

import httpx

from . import _calls as calls
from .errors import KioskdError
from .models import (
    AppendEvent, Capacity, Cluster, CompleteTask, Drain, Event, FailTask, Health, Role, Session, StopTask, TokenRole,
    Task, TaskState, ViewerToken, ViewerTokenRequest,
)

__all__ = ["Kioskd"]


class Kioskd:
    """kioskd's control API: over its Unix socket (the default), or over TCP with `base_url`.

        with Kioskd() as kioskd:                      # $KIOSKD_SOCKET or /run/kioskd/control.sock
            task = kioskd.create_task("https://example.com/", wait=True)

    Every method raises KioskdError on an error answer or when no answer comes. Reads and
    creates are sent again (up to `retries` times, backing off) when the connection fails or
    the store is briefly unavailable: a create carries a task_id (made here when you give
    none), so the repeat finds the task the first one started. Commands that end a task and
    appended events are not repeated.
    """

    def __init__(self, socket: str | None = None, *, base_url: str | None = None, timeout: float = 30.0,
                 retries: int = 3, headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        """`socket`: the control socket's path (default `$KIOSKD_SOCKET`, else
        /run/kioskd/control.sock). `base_url`: `http(s)://host:port[/prefix]` instead, for a
        control API reached over TCP. `timeout`: seconds for connecting and for an answer,
        besides the time a request asks the daemon to wait (`wait`)."""
        if base_url is not None and socket is not None:
            raise ValueError("give socket or base_url, not both")
        self.timeout = timeout
        self.retries = retries
        if transport is None and base_url is None:
            transport = httpx.HTTPTransport(uds=calls.socket_path(socket))
        # The host name is not used for routing on the Unix socket.
        self._http = httpx.Client(base_url=base_url or "http://kioskd", transport=transport,
                                  headers=headers, timeout=timeout)
        self._where = base_url or calls.socket_path(socket)

    # Plumbing ---------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Kioskd":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _timeout(self, wait_s: float) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=self.timeout + wait_s)

    def _send(self, call: calls.Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, params=call.params, json=call.body,
                                              headers=call.headers, timeout=self._timeout(call.wait_s))
            except httpx.HTTPError as e:
                error, cause = calls.transport_error(e, f"{call.method} {call.path} on {self._where}"), e
            else:
                if response.status_code < 400:
                    return call.decode(response)
                error, cause = calls.error_from(response), None
            if not (call.idempotent and calls.retryable(error)) or attempt >= self.retries:
                raise error from cause
            time.sleep(calls.backoff(attempt))
            attempt += 1

    # The daemon -------------------------------------------------------------------------------

    def health(self) -> Health:
        """GET /v1/health: `status` ok or draining, the store, active sessions."""
        return self._send(calls.health())

    def capacity(self) -> Capacity:
        """GET /v1/capacity: session slots (max, active, queued, available) and draining."""
        return self._send(calls.capacity())

    def cluster(self) -> Cluster:
        """GET /v1/cluster (cluster mode; 404 not_clustered otherwise): the hosts with their
        leases and room, the shared queue, and the autoscaler's signals."""
        return self._send(calls.cluster())

    def drain(self, wait: int | None = None) -> Drain:
        """POST /v1/drain: take no new tasks (creates answer 503 draining); running ones go on.
        With `wait` (seconds, ≤ 3600), answers once no task is left or at that deadline:
        `drained` says which."""
        return self._send(calls.drain(wait))

    def sessions(self) -> list[Session]:
        """GET /v1/sessions: the running kiosk sessions."""
        return self._send(calls.sessions())

    def tree(self) -> dict[str, Any]:
        """GET /v1/tree: the supervision tree's snapshot, as JSON."""
        return self._send(calls.tree())

    def openapi(self) -> dict[str, Any]:
        """GET /v1/openapi.json: the API's OpenAPI document."""
        return self._send(calls.openapi())

    def metrics(self) -> str:
        """GET /metrics: Prometheus' text format."""
        return self._send(calls.metrics())

    # Tasks ------------------------------------------------------------------------------------

    def create_task(self, url: str, *, task_id: str | None = None, width: int | None = None,
                    height: int | None = None, input: Role | None = None, timeout_s: int | None = None,
                    max_lifetime_s: int | None = None, memory_max_mb: int | None = None,
                    metadata: dict[str, Any] | None = None,
                    wait: bool = False) -> Task:
        """POST /v1/tasks: a kiosk session showing `url` (http(s), about: or data:).

        Answers at once (queued or starting); `wait=True`: once running or final, at most 25 s.
        `task_id`: yours (1-64 letters, digits, '-', '_'); none: one is made here, so this
        call's own retries never start a second browser. Creating again with the same id and
        request returns the task; with another request it is 409 task_id_reused.
        `timeout_s`: to be running; `max_lifetime_s`: from creation; `input`: what its
        viewers may do; `memory_max_mb`: its session's memory limit (default: the host's);
        `metadata`: your JSON object, kept with the task."""
        request = calls.create_request(url, task_id, width, height, input, timeout_s, max_lifetime_s, metadata, memory_max_mb)
        return self._send(calls.create_task(request, wait))

    def get_task(self, task_id: str) -> Task:
        """GET /v1/tasks/{id}; 404 task_not_found."""
        return self._send(calls.get_task(task_id))

    def list_tasks(self, *, state: str | TaskState | Iterable[str | TaskState] | None = None,
                   limit: int | None = None) -> list[Task]:
        """GET /v1/tasks: newest first; `state`: one state or several (an empty list matches
        none); `limit`: 1-1000, default 100."""
        return self._send(calls.list_tasks(state, limit))

    def wait_task(self, task_id: str, *, until: str = "running", timeout: float | None = None) -> Task:
        """The task once it is running or final (`until="final"`: once final), following its
        events with long polls. After `timeout` seconds: KioskdError wait_timeout, whose
        `state` is the task's."""
        done = calls.wait_targets(until)
        deadline = None if timeout is None else time.monotonic() + timeout
        task = self.get_task(task_id)
        while not done(task.state):
            wait = calls.MAX_WAIT_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise calls.wait_timeout(task, timeout or 0)
                wait = max(1, min(wait, int(left + 0.999)))
            self.events(task_id, since=task.last_event, wait=wait, limit=1)
            task = self.get_task(task_id)
        return task

    def stop_task(self, task_id: str, *, reason: str | None = None) -> Task:
        """POST /v1/tasks/{id}/stop: cancelled, its session stopped; 409 illegal_transition
        when it is already final (the error's `state` says which)."""
        return self._send(calls.end_task(task_id, "stop", StopTask(reason=reason)))

    def complete_task(self, task_id: str, *, reason: str | None = None, result: dict[str, Any] | None = None) -> Task:
        """POST /v1/tasks/{id}/complete: a running task completed, with your `result` kept in
        its final event; 409 illegal_transition unless it is running."""
        return self._send(calls.end_task(task_id, "complete", CompleteTask(reason=reason, result=result)))

    def fail_task(self, task_id: str, *, reason: str | None = None) -> Task:
        """POST /v1/tasks/{id}/fail: failed, its session stopped; 409 when already final."""
        return self._send(calls.end_task(task_id, "fail", FailTask(reason=reason)))

    # Events -----------------------------------------------------------------------------------

    def events(self, task_id: str, *, since: int = 0, wait: int | None = None, limit: int | None = None) -> list[Event]:
        """GET /v1/tasks/{id}/events: the events after seq `since`. `wait` (0-25 s): hold
        the request until one arrives (a long poll; [] when none did). `limit`: 1-1000,
        default 500."""
        return self._send(calls.events(task_id, since, wait, limit))

    def append_event(self, task_id: str, type: str, data: dict[str, Any] | None = None) -> Event:
        """POST /v1/tasks/{id}/events: store an event of yours (an agent's step); returns it
        with its seq."""
        return self._send(calls.append_event(task_id, AppendEvent(type=type, data=data)))

    def stream_events(self, task_id: str, *, since: int = 0, reconnect_timeout: float = 30.0) -> Iterator[Event]:
        """The task's events after `since` as they happen (server-sent events), ending once
        the task is final and its events are all read. A dropped connection is resumed from
        the last event seen (Last-Event-ID), so no event is lost or repeated; after
        `reconnect_timeout` seconds without a connection: KioskdError unreachable."""
        last, failures, first_failure = since, 0, None
        read_timeout = 3 * calls.SSE_KEEPALIVE_S
        while True:
            path, params, headers = calls.stream_request(task_id, last)
            try:
                with self._http.stream("GET", path, params=params, headers=headers,
                                       timeout=httpx.Timeout(self.timeout, read=read_timeout)) as response:
                    if response.status_code >= 400:
                        response.read()
                        error = calls.error_from(response)
                        if not calls.retryable(error):
                            raise error
                        raise _Retry(error)
                    failures, first_failure = 0, None
                    parser = calls.SSEParser()
                    for line in response.iter_lines():
                        for event in parser.feed(line):
                            if event.seq > last:
                                last = event.seq
                                yield event
                # The daemon ends the stream once the task is final; make sure nothing is
                # left (an event stored after the final state is fetched by the next round).
                try:
                    task = self.get_task(task_id)
                except KioskdError as e:
                    # The daemon went away as it ended the stream (a restart): reconnect.
                    if not calls.retryable(e):
                        raise
                    raise _Retry(e) from None
                if task.state.final and task.last_event <= last:
                    return
                continue
            except httpx.HTTPError as e:
                error = calls.transport_error(e, f"the event stream of task '{task_id}' on {self._where}")
                cause: BaseException | None = e
            except _Retry as r:
                error, cause = r.error, None
            now = time.monotonic()
            first_failure = first_failure or now
            if now - first_failure >= reconnect_timeout:
                raise error from cause
            time.sleep(calls.backoff(failures))
            failures += 1

    # Viewers ----------------------------------------------------------------------------------

    def viewer_token(self, task_id: str, *, role: TokenRole = "view", ttl_s: int | None = None) -> ViewerToken:
        """POST /v1/tasks/{id}/viewer-token: a signed token for one viewer of the task, `role`
        view or control (or agent: the task's CDP endpoint, /api/v1/cdp/ws), valid `ttl_s` seconds (10-3600, default 300). The viewer opens
        `task.session.vnc_ws_path + "&token=" + token` on the public listener. 409
        task_finished once the task is final."""
        return self._send(calls.viewer_token(task_id, ViewerTokenRequest(role=role, ttl_s=ttl_s)))


class _Retry(Exception):
    def __init__(self, error: KioskdError) -> None:
        self.error = error
