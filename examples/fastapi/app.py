"""A reference API layer in front of kioskd: the public shape a product's frontend uses, built
on the `kioskd` package's async client. Run it with

    KIOSKD_SOCKET=/run/kioskd/control.sock KIOSKD_PUBLIC_URL=https://kiosk.example.com \\
        uvicorn app:app --host 127.0.0.1 --port 8000

    POST /api/v1/tasks/start                     {"url": …}  → 202 {"task_id", "state"}, at once
    GET  /api/v1/tasks/{id}                      the task's state
    GET  /api/v1/tasks/{id}/events?since=N       the events after N (poll it, e.g. every 1.5 s;
                                                 &wait=S holds the request until one comes)
    GET  /api/v1/tasks/{id}/events/stream        the same as server-sent events (EventSource),
                                                 resuming after Last-Event-ID, ending when final
    POST /api/v1/tasks/{id}/viewer-token         {"role": "view"|"control"} → the URL of the
                                                 viewer WebSocket on kioskd's public listener
    POST /api/v1/tasks/{id}/stop                 cancel it

Errors are kioskd's, passed on with their status: {"error": {"code", "message", …}}.
Authentication and who may see which task are this layer's business and left out here.
"""
import os
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, AsyncIterator, Literal
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from kioskd import AsyncKioskd, Event, KioskdError, Task

START_TIMEOUT_S = 120
"""How long a task may take to be running before kioskd times it out."""


@dataclass
class Settings:
    socket: str | None = field(default_factory=lambda: os.environ.get("KIOSKD_SOCKET"))
    """kioskd's control socket (None: the client's default, /run/kioskd/control.sock)."""
    public_url: str = field(default_factory=lambda: os.environ.get("KIOSKD_PUBLIC_URL", ""))
    """Where browsers reach kioskd's public listener (https://kiosk.example.com); empty: the
    same origin as this API (a load balancer routes /api/v1/vnc/ws to kioskd), so the viewer
    URL is a path."""
    token_ttl_s: int = 300


# What the frontend sends and gets -----------------------------------------------------------


class StartTask(BaseModel):
    url: str = Field(description="http(s), about: or data: URL; kioskd checks it")
    width: int | None = None
    height: int | None = None
    input: Literal["view", "control"] | None = None
    metadata: dict[str, Any] | None = None


class Started(BaseModel):
    task_id: str
    state: str


class TaskOut(BaseModel):
    task_id: str
    state: str
    final: bool
    reason: str | None = None
    created_at: datetime
    ended_at: datetime | None = None


class EventOut(BaseModel):
    seq: int
    type: str
    time: datetime
    data: dict[str, Any]


class EventPage(BaseModel):
    task_id: str
    state: str
    final: bool
    """The task is final and every event has been handed out: stop polling."""
    events: list[EventOut]
    next_since: int
    """Pass as `since` on the next poll."""


class ViewerRequest(BaseModel):
    role: Literal["view", "control"] = "view"


class Viewer(BaseModel):
    token: str
    role: str
    expires_at: datetime
    ws_url: str
    """Open this WebSocket (noVNC: `new RFB(element, ws_url)`) on kioskd's public listener."""
    viewer_url: str
    """Or show kioskd's own noVNC page."""


def task_out(task: Task) -> TaskOut:
    return TaskOut(task_id=task.task_id, state=task.state.value, final=task.state.final, reason=task.reason,
                   created_at=task.created_at, ended_at=task.ended_at)


def event_out(event: Event) -> EventOut:
    return EventOut(seq=event.seq, type=event.type, time=event.time, data=event.data)


# The app ------------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client (one connection pool) for the app's life, on its event loop.
        async with AsyncKioskd(settings.socket) as kioskd:
            app.state.kioskd = kioskd
            yield

    app = FastAPI(title="kioskd reference API layer", lifespan=lifespan)

    def client(request: Request) -> AsyncKioskd:
        return request.app.state.kioskd

    # Annotations are evaluated here (no `from __future__ import annotations` in this file):
    # FastAPI reads them to find the dependencies.
    Kioskd = Annotated[AsyncKioskd, Depends(client)]

    async def existing_task(task_id: str, kioskd: Kioskd) -> Task:
        # A dependency, so a 404 is answered before a stream starts.
        return await kioskd.get_task(task_id)

    @app.exception_handler(KioskdError)
    async def kioskd_error(request: Request, error: KioskdError) -> JSONResponse:
        if error.status == 0:  # no answer from kioskd
            status, code = (504 if error.code == "timeout" else 502), f"kioskd_{error.code}"
        else:
            status, code = (error.status if error.status < 500 or error.status == 503 else 502), error.code
        return JSONResponse({"error": {"code": code, "message": error.message, **error.details}}, status_code=status)

    @app.post("/api/v1/tasks/start", status_code=202, response_model=Started)
    async def start(body: StartTask, kioskd: Kioskd,
                    idempotency_key: Annotated[str | None, Header(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")] = None) -> Started:
        """Answers at once (queued or starting), well under API Gateway's 29 s: the browser boots
        while the frontend polls. With an Idempotency-Key (a UUID the frontend makes per click)
        a retried start returns the same task instead of starting a second browser."""
        task = await kioskd.create_task(body.url, task_id=idempotency_key, width=body.width, height=body.height,
                                        input=body.input, metadata=body.metadata, timeout_s=START_TIMEOUT_S)
        return Started(task_id=task.task_id, state=task.state.value)

    @app.get("/api/v1/tasks/{task_id}", response_model=TaskOut)
    async def get(task: Annotated[Task, Depends(existing_task)]) -> TaskOut:
        return task_out(task)

    @app.get("/api/v1/tasks/{task_id}/events", response_model=EventPage)
    async def events(task_id: str, kioskd: Kioskd, since: Annotated[int, Query(ge=0)] = 0,
                     wait: Annotated[int, Query(ge=0, le=20)] = 0) -> EventPage:
        """The poll: events after `since`, and the task's state, read after them."""
        found = await kioskd.events(task_id, since=since, wait=wait or None)
        task = await kioskd.get_task(task_id)
        next_since = found[-1].seq if found else since
        return EventPage(task_id=task_id, state=task.state.value, final=task.state.final and next_since >= task.last_event,
                         events=[event_out(e) for e in found], next_since=next_since)

    @app.get("/api/v1/tasks/{task_id}/events/stream", response_class=EventSourceResponse)
    async def stream(task: Annotated[Task, Depends(existing_task)], kioskd: Kioskd,
                     since: Annotated[int, Query(ge=0)] = 0,
                     last_event_id: Annotated[str | None, Header()] = None) -> AsyncIterator[ServerSentEvent]:
        """Server-sent events: `id` is the event's seq, so a browser's EventSource resumes by
        itself (Last-Event-ID); the stream ends once the task is final."""
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else since
        async with aclosing(kioskd.stream_events(task.task_id, since=after)) as found:
            async for event in found:
                yield ServerSentEvent(id=str(event.seq), event=event.type, data=event_out(event))

    @app.post("/api/v1/tasks/{task_id}/viewer-token", response_model=Viewer)
    async def viewer_token(task_id: str, body: ViewerRequest, kioskd: Kioskd) -> Viewer:
        """A short-lived token for one viewer; the frontend opens `ws_url` right away."""
        token = await kioskd.viewer_token(task_id, role=body.role, ttl_s=settings.token_ttl_s)
        query = f"task_id={quote(task_id, safe='')}&token={quote(token.token, safe='')}"
        return Viewer(token=token.token, role=token.role, expires_at=token.expires_at,
                      ws_url=websocket_base(settings.public_url) + "/api/v1/vnc/ws?" + query,
                      viewer_url=settings.public_url.rstrip("/") + "/viewer?" + query)

    @app.post("/api/v1/tasks/{task_id}/stop", response_model=TaskOut)
    async def stop(task_id: str, kioskd: Kioskd) -> TaskOut:
        return task_out(await kioskd.stop_task(task_id, reason="stopped by the user"))

    return app


def websocket_base(public_url: str) -> str:
    """https://host → wss://host; http → ws; empty → "" (a path on this origin)."""
    if not public_url:
        return ""
    parts = urlsplit(public_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{parts.path}"


app = create_app()
