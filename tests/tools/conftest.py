"""A real local HTTP server for the HTTP tool tests (threads, a free port, no internet)."""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest


class _Handler(BaseHTTPRequestHandler):
    server_version = "TestServer/1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "text/plain",
              headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if parts.path.startswith("/echo"):
            payload = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
            self._send(200, json.dumps(payload).encode(), "application/json; charset=utf-8")
        elif parts.path.startswith("/status/"):
            status = int(parts.path.rsplit("/", 1)[1])
            text = f"status {status}; you sent x-key={self.headers.get('X-Key')}"
            extra = {"Retry-After": "7"} if status == 429 else {}
            self._send(status, text.encode(), headers=extra)
        elif parts.path == "/redirect":
            code = int(query.get("code", "302"))
            self._send(code, b"", headers={"Location": query["to"]})
        elif parts.path == "/loop":
            self._send(302, b"", headers={"Location": "/loop"})
        elif parts.path == "/big":
            self._send(200, b"a" * int(query["n"]))
        elif parts.path == "/slow":
            time.sleep(float(query["s"]))
            self._send(200, b"finally")
        elif parts.path == "/html":
            page = (
                "<html><head><title>The  Title</title><style>p{color:red}</style>"
                "<script>alert('x')</script></head><body><h1>Heading</h1>"
                "<p>First &amp; <b>bold</b>\n   paragraph.</p><ul><li>one</li><li>two</li></ul>"
                "<pre>  keep\n    spacing</pre></body></html>"
            )
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif parts.path == "/cookie":
            self._send(200, b"set", headers={"Set-Cookie": "sid=tenant-a-session; Path=/"})
        elif parts.path == "/binary":
            self._send(200, bytes(range(256)), "application/octet-stream")
        elif parts.path == "/latin1":
            self._send(200, "café".encode("latin-1"), "text/plain; charset=iso-8859-1")
        else:
            self._send(404, b"no such page")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


@dataclass(frozen=True)
class LocalServer:
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def http_server() -> Iterator[LocalServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalServer(port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
