"""kioskd's control API from Python: `Kioskd` (sync) and `AsyncKioskd` (async), over the
control socket or TCP; typed models of the API's objects; one exception, `KioskdError`."""
from __future__ import annotations

from ._calls import DEFAULT_SOCKET, OPERATIONS, new_task_id
from .aio import AsyncKioskd
from .client import Kioskd
from .errors import KioskdError
from .models import (
    AppendEvent, Capacity, Cluster, ClusterHost, ClusterQueue, ClusterSignals, CompleteTask, CreateTask, Drain, ErrorBody, Event, FailTask, Health, Role,
    Session, StopTask, Task, TaskSession, TaskState, TokenRole, ViewerToken, ViewerTokenRequest,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SOCKET", "OPERATIONS", "AsyncKioskd", "Kioskd", "KioskdError", "new_task_id",
    "AppendEvent", "Capacity", "Cluster", "ClusterHost", "ClusterQueue", "ClusterSignals", "CompleteTask", "CreateTask", "Drain", "ErrorBody", "Event", "FailTask",
    "Health", "Role", "Session", "StopTask", "Task", "TaskSession", "TaskState", "TokenRole", "ViewerToken",
    "ViewerTokenRequest",
]
