"""A small synchronous client of the Colony HTTP API, used by the CLI."""

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from core import tenants
from core.errors import AuthError, ColonyError
from core.settings import Settings


class ApiError(ColonyError):
    """The API answered with an error body."""

    def __init__(self, status: int, type_: str, message: str, details: Any = None) -> None:
        super().__init__(
            f"{message} (HTTP {status}, {type_})",
            details=details if isinstance(details, dict) else {},
        )
        self.status = status
        self.type = type_


def resolve_api_key(settings: Settings) -> str:
    """`COLONY_API_KEY`, else the admin key `colony up` stored in the data dir."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    key = tenants.read_key_file(settings.data_path)
    if key is None:
        raise AuthError(
            f"no API key: set COLONY_API_KEY, or start the stack once (`colony up`) to create "
            f"{settings.data_path / tenants.ADMIN_KEY_FILE}"
        )
    return key


class ColonyClient:
    """`with ColonyClient(settings) as api: api.post("/v1/stack-checks")`."""

    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=settings.effective_api_url,
            headers={"Authorization": f"Bearer {resolve_api_key(settings)}"},
            timeout=timeout,
        )

    def __enter__(self) -> "ColonyClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; returns the decoded JSON body or raises ApiError."""
        response = self._http.request(method, path, **kwargs)
        if response.is_success:
            return response.json() if response.content else None
        self._raise(response)

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            error = response.json()["error"]
            raise ApiError(
                response.status_code, error["type"], error["message"], error.get("details")
            )
        except (ValueError, KeyError, TypeError):
            raise ApiError(response.status_code, "http_error", response.text[:200]) from None

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET `path`."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        """POST `path`."""
        return self.request("POST", path, **kwargs)

    def download(self, path: str) -> Iterator[bytes]:
        """The body of a long response to GET `path` (an export), chunk by chunk."""
        with self._http.stream("GET", path, timeout=(30.0, None, 30.0, 30.0)) as response:
            if not response.is_success:
                response.read()
                self._raise(response)
            yield from response.iter_bytes()

    def stream(self, path: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """Server-Sent Events of `path` after event `after`."""
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        # (connect, read, write, pool): no read timeout on a stream that waits for events.
        # A plain tuple, not an httpx.Timeout: the transport may be another HTTP client
        # with the same interface (starlette's TestClient is built on httpx2).
        with self._http.stream(
            "GET", path, headers=headers, timeout=(30.0, None, 30.0, 30.0)
        ) as response:
            if not response.is_success:
                response.read()
                self._raise(response)
            yield from parse_sse_lines(response.iter_lines())


def parse_sse_lines(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Decode a Server-Sent Events line stream into the JSON `data` of each event."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield json.loads("\n".join(data))
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield json.loads("\n".join(data))


class EventStream:
    """The events of a run, swarm or evolution cycle, resumed with Last-Event-ID if cut off.

    Iteration ends after the `terminal` event (or when the server ends the stream).
    """

    def __init__(
        self, client: "ColonyClient", path: str, *, terminal: str, max_reconnects: int = 20
    ) -> None:
        self._client = client
        self._path = path
        self._terminal = terminal
        self._max_reconnects = max_reconnects
        self.last_seq = 0

    @classmethod
    def of_run(cls, client: "ColonyClient", run_id: str) -> "EventStream":
        """A run's events, to `run.finished`."""
        return cls(client, f"/v1/runs/{run_id}/events", terminal="run.finished")

    @classmethod
    def of_swarm(cls, client: "ColonyClient", swarm_id: str) -> "EventStream":
        """A swarm's events, to `swarm.finished`."""
        return cls(client, f"/v1/swarms/{swarm_id}/events", terminal="swarm.finished")

    @classmethod
    def of_evolution(cls, client: "ColonyClient", agent: str, evolution_id: str) -> "EventStream":
        """An evolution cycle's events, to `evolution.finished`."""
        path = f"/v1/agents/{agent}/evolutions/{evolution_id}/events"
        return cls(client, path, terminal="evolution.finished")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        reconnects = 0
        while True:
            try:
                for event in self._client.stream(self._path, self.last_seq):
                    self.last_seq = int(event["seq"])
                    reconnects = 0
                    yield event
                    if event["type"] == self._terminal:
                        return
                return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                reconnects += 1
                if reconnects > self._max_reconnects:
                    raise
                time.sleep(min(0.2 * 2**reconnects, 5.0))
