"""schemathesis hooks for scripts/test-schemathesis.sh (SCHEMATHESIS_HOOKS)."""
from __future__ import annotations

import schemathesis

# createTask's capacity answers (openapi.json, POST /v1/tasks), each with whether it carries
# Retry-After.
CAPACITY_CODES = {"queue_full": True, "draining": True, "over_budget": False}


@schemathesis.check
def capacity_503(ctx, response, case):
    """A 503 from POST /v1/tasks is one of its documented capacity answers, with Retry-After where
    documented; schemathesis.toml exempts these 503s, and only these, from not_a_server_error."""
    if case.operation.label != "POST /v1/tasks" or response.status_code != 503:
        return None
    try:
        code = response.json()["error"]["code"]
    except Exception:
        raise AssertionError("a 503 from POST /v1/tasks without the documented error body")
    if code not in CAPACITY_CODES:
        raise AssertionError(f"503 {code} from POST /v1/tasks is not a capacity answer ({', '.join(CAPACITY_CODES)})")
    if CAPACITY_CODES[code] and not response.headers.get("retry-after"):
        raise AssertionError(f"503 {code} from POST /v1/tasks without Retry-After")
    return None
