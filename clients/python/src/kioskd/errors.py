"""The one exception the client raises."""
from __future__ import annotations

from typing import Any

__all__ = ["KioskdError"]


class KioskdError(Exception):
    """An error from the control API, or no answer at all.

    - `status`: the HTTP status (400, 404, 409, 413, 503 …), or 0 when there was no answer
      (the socket is missing or refused, the connection dropped and retries ran out, a wait
      ran out of time).
    - `code`: the API's error code (`invalid_request`, `task_not_found`, `illegal_transition`,
      `task_id_reused`, `task_finished`, `draining` …); without an answer: `unreachable`,
      `timeout` or `wait_timeout`; an answer the client cannot read: `invalid_response`.
    - `message`: what was wrong, as the daemon says it.
    - `details`: the error object's other fields, e.g. `{"state": "cancelled"}` on a 409;
      `state` reads that one.
    """

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None):
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(str(self))

    @property
    def state(self) -> str | None:
        """The task's state when the error names it (409 illegal_transition, task_finished,
        task_id_reused; a wait that ran out)."""
        value = self.details.get("state")
        return value if isinstance(value, str) else None

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.message}" if self.status else f"{self.code}: {self.message}"
        if self.details:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.details.items())) + ")"
        return text

    def __repr__(self) -> str:
        return f"KioskdError(status={self.status!r}, code={self.code!r}, message={self.message!r}, details={self.details!r})"

    def __reduce__(self):  # picklable, e.g. across process pools
        return (type(self), (self.status, self.code, self.message, self.details))
