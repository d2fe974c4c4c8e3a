"""The control API's objects as frozen dataclasses.

Each model names the schema it mirrors in openapi.json (`__openapi__`, a JSON pointer), and
tests/test_openapi_models.py holds every field to it: names, which are required, and types.
A field the document does not list as required is optional here (`None` when absent), even
where today's daemon always sends it: the document is the contract.

Answers are decoded leniently: fields the daemon adds later are ignored, so an older client
keeps working against a newer daemon. Requests are encoded strictly: a field left as None is
not sent (the API treats null and absent alike).
"""
from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, Union

__all__ = [
    "AppendEvent",
    "Capacity",
    "Cluster",
    "ClusterHost",
    "ClusterQueue",
    "ClusterSignals",
    "CompleteTask",
    "CreateTask",
    "Drain",
    "ErrorBody",
    "Event",
    "FailTask",
    "Health",
    "Role",
    "Session",
    "StopTask",
    "Task",
    "TaskSession",
    "TaskState",
    "TokenRole",
    "ViewerToken",
    "ViewerTokenRequest",
]

Role = Literal["view", "control"]
"""A viewer's role: `view` (pixels only) or `control` (keys and pointer too)."""

TokenRole = Literal["view", "control", "agent"]
"""What a token opens: a viewer's role, or `agent`: the task's CDP endpoint
(/api/v1/cdp/ws on the public listener, for Playwright's connect_over_cdp)."""


class TaskState(str, enum.Enum):
    """components/schemas/TaskState. queued → starting → running → completed; from any
    unfinished state failed, cancelled, timed_out or interrupted. Final states accept nothing."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"

    __openapi__: ClassVar[str] = "#/components/schemas/TaskState"

    @property
    def final(self) -> bool:
        """No command or event changes the state any more."""
        return self not in (TaskState.QUEUED, TaskState.STARTING, TaskState.RUNNING)

    def __str__(self) -> str:
        return self.value


_model = dataclasses.dataclass(frozen=True)


# Answers ------------------------------------------------------------------------------------


@_model
class TaskSession:
    """What an agent needs of a running task's session (Task.session)."""

    __openapi__: ClassVar[str] = "#/components/schemas/Task/properties/session"

    cdp_url: str | None = None
    """Chromium's DevTools endpoint on loopback (Playwright: connect_over_cdp)."""
    display: str | None = None
    viewer_path: str | None = None
    """The noVNC page on the public listener; add `&token=…` (viewer_token)."""
    vnc_ws_path: str | None = None
    """The viewer WebSocket on the public listener; add `&token=…` (viewer_token)."""
    cdp_ws_path: str | None = None
    """The task's CDP endpoint on the public listener (any host of a cluster); add `&token=…`
    (viewer_token with role agent) and give Playwright's connect_over_cdp the ws:// URL."""


@_model
class Task:
    __openapi__: ClassVar[str] = "#/components/schemas/Task"

    task_id: str
    state: TaskState
    created_at: datetime
    updated_at: datetime
    request: dict[str, Any]
    """The canonical create request, as stored."""
    last_event: int
    """The seq of its latest event: `events(since=task.last_event)` waits for the next one."""
    ended_at: datetime | None = None
    reason: str | None = None
    session: TaskSession | None = None
    host: str | None = None
    """Cluster mode: the host that claimed it (None while it waits in the shared queue)."""


@_model
class Event:
    __openapi__: ClassVar[str] = "#/components/schemas/Event"

    seq: int
    """1, 2, 3… per task, without gaps."""
    type: str
    time: datetime
    data: dict[str, Any]


@_model
class Session:
    """A running kiosk session (GET /v1/sessions)."""

    __openapi__: ClassVar[str] = "#/components/schemas/Session"

    id: str | None = None
    state: str | None = None
    display: str | None = None
    cdp_url: str | None = None
    vnc_socket: str | None = None
    pids: dict[str, Any] | None = None


@_model
class Capacity:
    __openapi__: ClassVar[str] = "#/components/schemas/Capacity"

    max_sessions: int
    active: int
    queued: int
    max_queued: int
    available: int
    slots_free: int
    sessions: int
    warm: int
    warm_target: int
    memory_budget_bytes: int
    memory_used_bytes: int
    memory_committed_bytes: int
    session_estimate_bytes: int
    memory_pressure: float
    pressured: bool
    draining: bool


@_model
class ClusterHost:
    """One host of the cluster (Cluster.hosts)."""

    __openapi__: ClassVar[str] = "#/components/schemas/Cluster/properties/hosts/items"

    id: str
    address: str
    version: str
    epoch: int
    alive: bool
    self: bool
    started_at: datetime
    lease_age_ms: int
    lease_left_ms: int
    max_sessions: int
    active: int
    available: int
    draining: bool


@_model
class ClusterQueue:
    __openapi__: ClassVar[str] = "#/components/schemas/Cluster/properties/queue"

    queued: int
    claimed: int
    running: int
    oldest_queued_ms: int | None


@_model
class ClusterSignals:
    """What an autoscaler reads (a CloudWatch publisher, a KEDA scaler)."""

    __openapi__: ClassVar[str] = "#/components/schemas/Cluster/properties/signals"

    live_hosts: int
    queue_depth: int
    oldest_queued_seconds: float
    free_slots: int
    running: int
    suggested_hosts: int


@_model
class Cluster:
    __openapi__: ClassVar[str] = "#/components/schemas/Cluster"

    host: str
    now: datetime
    hosts: list[ClusterHost]
    queue: ClusterQueue
    signals: ClusterSignals


@_model
class Health:
    __openapi__: ClassVar[str] = "#/paths/~1v1~1health/get/responses/200/content/application~1json/schema"

    status: Literal["ok", "draining"]
    store: Literal["sqlite", "postgres"]
    active: int


@_model
class Drain:
    __openapi__: ClassVar[str] = "#/paths/~1v1~1drain/post/responses/200/content/application~1json/schema"

    status: Literal["draining"] | None = None
    active: int | None = None
    queued: int | None = None
    drained: bool | None = None


@_model
class ViewerToken:
    __openapi__: ClassVar[str] = (
        "#/paths/~1v1~1tasks~1{id}~1viewer-token/post/responses/201/content/application~1json/schema"
    )

    token: str
    """A signed JWT: the viewer's `token=` on /api/v1/vnc/ws and /viewer, or the agent's on
    /api/v1/cdp/ws."""
    task_id: str
    role: TokenRole
    expires_at: datetime


@_model
class ErrorBody:
    """The `error` object of every error answer; KioskdError carries it."""

    __openapi__: ClassVar[str] = "#/components/schemas/Error/properties/error"

    code: str
    message: str
    state: str | None = None
    """The task's state, on a 409."""


# Requests -----------------------------------------------------------------------------------


@_model
class CreateTask:
    __openapi__: ClassVar[str] = "#/components/schemas/CreateTask"

    url: str
    task_id: str | None = None
    width: int | None = None
    height: int | None = None
    input: Role | None = None
    timeout_s: int | None = None
    max_lifetime_s: int | None = None
    memory_max_mb: int | None = None
    metadata: dict[str, Any] | None = None


@_model
class StopTask:
    __openapi__: ClassVar[str] = (
        "#/paths/~1v1~1tasks~1{id}~1stop/post/requestBody/content/application~1json/schema"
    )

    reason: str | None = None


@_model
class CompleteTask:
    __openapi__: ClassVar[str] = (
        "#/paths/~1v1~1tasks~1{id}~1complete/post/requestBody/content/application~1json/schema"
    )

    reason: str | None = None
    result: dict[str, Any] | None = None


@_model
class FailTask:
    __openapi__: ClassVar[str] = (
        "#/paths/~1v1~1tasks~1{id}~1fail/post/requestBody/content/application~1json/schema"
    )

    reason: str | None = None


@_model
class AppendEvent:
    __openapi__: ClassVar[str] = (
        "#/paths/~1v1~1tasks~1{id}~1events/post/requestBody/content/application~1json/schema"
    )

    type: str
    data: dict[str, Any] | None = None


@_model
class ViewerTokenRequest:
    __openapi__: ClassVar[str] = (
        "#/paths/~1v1~1tasks~1{id}~1viewer-token/post/requestBody/content/application~1json/schema"
    )

    role: TokenRole
    ttl_s: int | None = None


MODELS: tuple[type, ...] = (
    TaskSession, Task, Event, Session, Capacity, ClusterHost, ClusterQueue, ClusterSignals, Cluster, Health, Drain, ViewerToken, ErrorBody,
    CreateTask, StopTask, CompleteTask, FailTask, AppendEvent, ViewerTokenRequest,
)
"""Every dataclass above: the drift test checks each against its `__openapi__` schema."""


# Decoding and encoding ----------------------------------------------------------------------


class DecodeError(ValueError):
    """An answer that does not have the shape the document gives it."""


_hints_cache: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of a model (annotations are strings here)."""
    hints = _hints_cache.get(cls)
    if hints is None:
        module = sys.modules[cls.__module__]
        all_hints = typing.get_type_hints(cls, vars(module))
        hints = {f.name: all_hints[f.name] for f in dataclasses.fields(cls)}
        _hints_cache[cls] = hints
    return hints


def parse_time(text: str) -> datetime:
    """RFC 3339 as the daemon writes it (`2026-11-22T01:50:00.123Z`); Python 3.10's
    fromisoformat does not take the `Z`."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) is Union or (
        hasattr(types, "UnionType") and isinstance(tp, types.UnionType)
    )


def _convert(tp: Any, value: Any, where: str) -> Any:
    if value is None:
        if _is_union(tp) and type(None) in typing.get_args(tp):
            return None
        raise DecodeError(f"{where} is null")
    if _is_union(tp):
        options = [t for t in typing.get_args(tp) if t is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, where)
        raise TypeError(f"unsupported union at {where}")  # pragma: no cover (no such field)
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise DecodeError(f"{where} is {value!r}, not one of {typing.get_args(tp)}")
        return value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise DecodeError(f"{where} is not an object")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise DecodeError(f"{where} is not an array")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return decode(tp, value, where)
    if tp is datetime:
        if not isinstance(value, str):
            raise DecodeError(f"{where} is not a date-time string")
        try:
            return parse_time(value)
        except ValueError as e:
            raise DecodeError(f"{where}: {e}") from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise DecodeError(f"{where} is {value!r}, not a {tp.__name__}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise DecodeError(f"{where} is not a boolean")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DecodeError(f"{where} is not an integer")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise DecodeError(f"{where} is not a string")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DecodeError(f"{where} is not a number")
        return float(value)
    raise TypeError(f"unsupported type {tp!r} at {where}")  # pragma: no cover


def decode(cls: type, data: Any, where: str | None = None) -> Any:
    """An answer's JSON as `cls`: required fields must be there, unknown ones are ignored."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise DecodeError(f"{where} is not an object")
    values = {}
    for f in dataclasses.fields(cls):
        tp = field_types(cls)[f.name]
        if f.name in data:
            values[f.name] = _convert(tp, data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DecodeError(f"{where} has no '{f.name}'")
    return cls(**values)


def encode(model: Any) -> dict[str, Any]:
    """A request model as its JSON body: fields left as None are not sent."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(model):
        value = getattr(model, f.name)
        if value is None:
            continue
        out[f.name] = value.value if isinstance(value, enum.Enum) else value
    return out
