"""What the sync and async clients share: each operation as a request description and a
decoder (no I/O here), error decoding, the SSE parser, the retry rules."""
from __future__ import annotations

import json
import os
import uuid
from urllib.parse import quote
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import httpx

from .errors import KioskdError
from .models import (
    AppendEvent, Capacity, Cluster, CompleteTask, CreateTask, DecodeError, Drain, ErrorBody, Event,
    FailTask, Health, Role, Session, StopTask, Task, TaskState, ViewerToken, ViewerTokenRequest,
    decode, encode,
)

DEFAULT_SOCKET = "/run/kioskd/control.sock"
"""control.socket's default; `KIOSKD_SOCKET` overrides it, as for the CLI."""

MAX_WAIT_S = 25
"""The longest `wait` the API takes (API Gateway cuts a request at 29 s)."""

SSE_KEEPALIVE_S = 15
"""The daemon writes a comment this often on an idle stream."""

# Error answers worth repeating an idempotent request for: the store was briefly away, or the
# daemon is stopping (systemd starts it again; an event stream then resumes where it was).
_RETRY_CODES = frozenset({"store_unavailable", "shutting_down"})

OPERATIONS: dict[str, str] = {
    "health": "health",
    "openapi": "openapi",
    "tree": "tree",
    "sessions": "sessions",
    "capacity": "capacity",
    "cluster": "cluster",
    "drain": "drain",
    "createTask": "create_task",
    "listTasks": "list_tasks",
    "getTask": "get_task",
    "stopTask": "stop_task",
    "completeTask": "complete_task",
    "failTask": "fail_task",
    "taskEvents": "events",
    "appendEvent": "append_event",
    "viewerToken": "viewer_token",
    "metrics": "metrics",
}
"""Each operationId of openapi.json and the client method that calls it (both clients); the
drift test checks that this covers the document and that each method takes the operation's
query parameters and body fields as keyword arguments."""


def new_task_id() -> str:
    """A task id made on the client, so a create that is retried (by this client, or by you
    with the id you got) finds the task it started instead of starting a second browser."""
    return uuid.uuid4().hex


def socket_path(socket: str | None) -> str:
    return socket or os.environ.get("KIOSKD_SOCKET") or DEFAULT_SOCKET


@dataclass
class Call:
    method: str
    path: str
    decode: Callable[[httpx.Response], Any]
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    wait_s: float = 0
    """How long the daemon may hold the answer back (added to the read timeout)."""
    idempotent: bool = False
    """Safe to send again when no answer came: reads, and creates (they carry a task_id)."""


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise KioskdError(response.status_code, "invalid_response",
                          f"{response.request.method} {response.request.url.path}: the answer is not JSON: {response.text[:200]!r}") from None


def _one(cls: type) -> Callable[[httpx.Response], Any]:
    def read(response: httpx.Response) -> Any:
        try:
            return decode(cls, _json(response))
        except DecodeError as e:
            raise KioskdError(response.status_code, "invalid_response", str(e)) from None
    return read


def _many(cls: type) -> Callable[[httpx.Response], Any]:
    def read(response: httpx.Response) -> Any:
        items = _json(response)
        if not isinstance(items, list):
            raise KioskdError(response.status_code, "invalid_response", f"expected an array of {cls.__name__}")
        try:
            return [decode(cls, item, f"{cls.__name__}[{i}]") for i, item in enumerate(items)]
        except DecodeError as e:
            raise KioskdError(response.status_code, "invalid_response", str(e)) from None
    return read


def error_from(response: httpx.Response) -> KioskdError:
    """The answer's `{"error": {"code", "message", …}}` as a KioskdError."""
    try:
        body = response.json()
        error = decode(ErrorBody, body["error"])
        extra = {k: v for k, v in body["error"].items() if k not in ("code", "message")}
        return KioskdError(response.status_code, error.code, error.message, extra)
    except (ValueError, KeyError, TypeError, DecodeError):
        return KioskdError(response.status_code, "http_error",
                           f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}: {response.text[:200]!r}")


def transport_error(error: httpx.HTTPError, where: str) -> KioskdError:
    if isinstance(error, httpx.TimeoutException):
        return KioskdError(0, "timeout", f"{where}: no answer in time ({type(error).__name__})")
    return KioskdError(0, "unreachable", f"{where}: {error or type(error).__name__}")


def retryable(error: KioskdError) -> bool:
    return (error.status == 0 and error.code in ("unreachable", "timeout")) or error.code in _RETRY_CODES


def backoff(attempt: int, cap: float = 2.0) -> float:
    return min(cap, 0.1 * 2 ** attempt)


def _check_id(task_id: str) -> str:
    # Escaped, so an id with '/' or '?' names no other path: the daemon answers for it.
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a str, not {type(task_id).__name__}")
    return quote(task_id, safe="")


def _states(state: str | TaskState | Iterable[str | TaskState] | None) -> str | None:
    if state is None:
        return None
    if isinstance(state, (str, TaskState)):
        return str(state)
    return ",".join(str(s) for s in state)


# The operations -----------------------------------------------------------------------------


def health() -> Call:
    return Call("GET", "/v1/health", _one(Health), idempotent=True)


def openapi() -> Call:
    return Call("GET", "/v1/openapi.json", _json, idempotent=True)


def tree() -> Call:
    return Call("GET", "/v1/tree", _json, idempotent=True)


def sessions() -> Call:
    return Call("GET", "/v1/sessions", _many(Session), idempotent=True)


def capacity() -> Call:
    return Call("GET", "/v1/capacity", _one(Capacity), idempotent=True)


def cluster() -> Call:
    return Call("GET", "/v1/cluster", _one(Cluster), idempotent=True)


def drain(wait: int | None) -> Call:
    return Call("POST", "/v1/drain", _one(Drain), params={"wait": wait} if wait is not None else None,
                wait_s=wait or 0, idempotent=True)


def metrics() -> Call:
    return Call("GET", "/metrics", lambda r: r.text, idempotent=True)


def create_task(request: CreateTask, wait: bool) -> Call:
    body = encode(request)
    return Call("POST", "/v1/tasks", _one(Task), params={"wait": "true"} if wait else None, body=body,
                wait_s=MAX_WAIT_S if wait else 0, idempotent=True)


def list_tasks(state: Any, limit: int | None) -> Call:
    params: dict[str, Any] = {}
    if state is not None:
        params["state"] = _states(state)
    if limit is not None:
        params["limit"] = limit
    return Call("GET", "/v1/tasks", _many(Task), params=params or None, idempotent=True)


def get_task(task_id: str) -> Call:
    return Call("GET", f"/v1/tasks/{_check_id(task_id)}", _one(Task), idempotent=True)


def end_task(task_id: str, command: str, body: StopTask | CompleteTask | FailTask) -> Call:
    # Not repeated without an answer: the first may have ended the task, and the repeat
    # would be a 409 that hides that it worked.
    return Call("POST", f"/v1/tasks/{_check_id(task_id)}/{command}", _one(Task), body=encode(body))


def events(task_id: str, since: int, wait: int | None, limit: int | None) -> Call:
    params: dict[str, Any] = {"since": since}
    if wait is not None:
        params["wait"] = wait
    if limit is not None:
        params["limit"] = limit
    return Call("GET", f"/v1/tasks/{_check_id(task_id)}/events", _many(Event), params=params,
                wait_s=wait or 0, idempotent=True)


def append_event(task_id: str, request: AppendEvent) -> Call:
    # Not repeated without an answer: the event may have been stored.
    return Call("POST", f"/v1/tasks/{_check_id(task_id)}/events", _one(Event), body=encode(request))


def viewer_token(task_id: str, request: ViewerTokenRequest) -> Call:
    # Minting a second token is harmless.
    return Call("POST", f"/v1/tasks/{_check_id(task_id)}/viewer-token", _one(ViewerToken),
                body=encode(request), idempotent=True)


def stream_request(task_id: str, after: int) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The SSE request resuming after `after`: the daemon takes Last-Event-ID over since."""
    return (f"/v1/tasks/{_check_id(task_id)}/events", {"since": after},
            {"Accept": "text/event-stream", "Last-Event-ID": str(after)})


def wait_targets(until: str) -> Callable[[TaskState], bool]:
    if until == "running":
        return lambda s: s is TaskState.RUNNING or s.final
    if until == "final":
        return lambda s: s.final
    raise ValueError(f"until must be 'running' or 'final', not {until!r}")


def wait_timeout(task: Task, timeout: float) -> KioskdError:
    return KioskdError(0, "wait_timeout", f"task '{task.task_id}' is still {task.state} after {timeout:g} s",
                       {"state": str(task.state)})


class SSEParser:
    """Server-sent events, line by line (WHATWG: `id:`, `event:`, `data:` lines, a blank line
    ends an event, lines starting with ':' are comments). Each event's data is one Event."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> Iterator[Event]:
        if line == "":
            if self._data:
                text = "\n".join(self._data)
                self._data = []
                try:
                    yield decode(Event, json.loads(text))
                except (ValueError, DecodeError) as e:
                    raise KioskdError(200, "invalid_response", f"an event in the stream: {e}") from None
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        # id and event repeat the data's seq and type; retry is not sent.


def create_request(url: str, task_id: str | None, width: int | None, height: int | None, input: Role | None,
                   timeout_s: int | None, max_lifetime_s: int | None, metadata: dict[str, Any] | None,
                   memory_max_mb: int | None = None) -> CreateTask:
    return CreateTask(url=url, task_id=task_id if task_id is not None else new_task_id(), width=width, height=height,
                      input=input, timeout_s=timeout_s, max_lifetime_s=max_lifetime_s, memory_max_mb=memory_max_mb,
                      metadata=metadata)
