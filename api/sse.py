"""Server-Sent Events of an append-only event log (a run's, a swarm's).

Events are read from Postgres after a sequence number, so a client resumes where it
left off: `Last-Event-ID` (what EventSource sends on reconnect) or `?after=`. The
stream ends once the owner's terminal event has been sent; `?format=json` returns the
events stored so far as a JSON list instead. An open stream checks its API key every
`KEY_CHECK_SECONDS` and ends once the key is revoked or expired.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.schemas.runs import EventPublic
from core.db import Pool
from core.errors import InvalidInput
from core.event_log import Conn, EventRecord
from core.tenants import key_is_usable

ListEvents = Callable[[Conn, int], Awaitable[list[EventRecord]]]
"""`fn(conn, after)`: the owner's events with seq > after, in order (one page)."""

POLL_SECONDS = 0.2
PING_SECONDS = 15
KEY_CHECK_SECONDS = 5.0
"""How often an open stream checks that its key is still neither revoked nor expired."""


def parse_last_event_id(value: str | None) -> int:
    """The sequence number in a `Last-Event-ID` header (0 when absent).

    Raises:
        InvalidInput: not a non-negative integer.
    """
    if value is None or value == "":
        return 0
    try:
        parsed = int(value)
    except ValueError:
        raise InvalidInput(
            f"Last-Event-ID must be an event sequence number, got {value!r}"
        ) from None
    if parsed < 0:
        raise InvalidInput("Last-Event-ID must not be negative")
    return parsed


async def events_response(
    request: Request,
    pool: Pool,
    list_events: ListEvents,
    *,
    terminal: str,
    after: int | None,
    last_event_id: str | None,
    format: str,
) -> Response:
    """The events after `after` (else `Last-Event-ID`) as SSE until `terminal`, or JSON."""
    start = after if after is not None else parse_last_event_id(last_event_id)
    if format == "json":
        async with pool.connection() as conn:
            events = await list_events(conn, start)
        body = [EventPublic(**e.model_dump()).model_dump(mode="json") for e in events]
        return Response(json.dumps(body), media_type="application/json")
    return EventSourceResponse(
        stream(request, pool, list_events, after=start, terminal=terminal), ping=PING_SECONDS
    )


async def stream(
    request: Request, pool: Pool, list_events: ListEvents, *, after: int, terminal: str
) -> AsyncIterator[ServerSentEvent]:
    """Events after `after` until `terminal`, the client leaving or the key's revocation."""
    principal = getattr(request.state, "principal", None)
    checked = time.monotonic()
    while not await request.is_disconnected():
        async with pool.connection() as conn:
            if principal is not None and time.monotonic() - checked >= KEY_CHECK_SECONDS:
                if not await key_is_usable(conn, principal.key_id):
                    return
                checked = time.monotonic()
            events = await list_events(conn, after)
        for event in events:
            after = event.seq
            yield ServerSentEvent(
                id=str(event.seq),
                event=event.type,
                data=json.dumps({"seq": event.seq, "type": event.type, "data": event.data,
                                 "created_at": event.created_at.isoformat()}),
            )  # fmt: skip
            if event.type == terminal:
                return
        if not events:
            await asyncio.sleep(POLL_SECONDS)
