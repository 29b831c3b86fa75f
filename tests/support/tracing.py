"""Reading spans in tests: the process's global provider, and a local OTLP/HTTP receiver.

The global tracer provider can be installed only once per process, and the API, the
workers and `core.tracing` all use it. `captured_spans` attaches an in-memory exporter
to it for one test (installing the provider, exporting nowhere else, if no test has yet).
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core import telemetry
from tests.conftest import make_settings


class _Forward(SpanProcessor):
    """Hands every ended span to the exporter of the test that is capturing, if any."""

    def __init__(self) -> None:
        self.exporter: InMemorySpanExporter | None = None

    def on_end(self, span: ReadableSpan) -> None:
        exporter = self.exporter
        if exporter is not None:
            exporter.export([span])


_forward = _Forward()
_lock = threading.Lock()
_attached: list[TracerProvider] = []


def global_provider() -> TracerProvider:
    """The process's SDK tracer provider, installed now if no one has yet."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        telemetry.setup_tracing(make_settings(), "colony-tests")
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    return provider


@contextmanager
def captured_spans() -> Iterator[InMemorySpanExporter]:
    """Spans the process ends while the block runs (API, workflows, activities)."""
    provider = global_provider()
    with _lock:
        if provider not in _attached:
            provider.add_span_processor(_forward)
            _attached.append(provider)
    exporter = InMemorySpanExporter()
    _forward.exporter = exporter
    try:
        yield exporter
    finally:
        _forward.exporter = None


def scoped_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider of the test's own (not global), with an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@dataclass
class OtlpReceiver:
    """A local OTLP/HTTP collector: accepts `POST /v1/traces` (protobuf), keeps the spans."""

    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    base_url: str = ""

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """Every received span, with its resource's attributes."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    out += [(resource, span) for span in scope_spans.spans]
        return out


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An `OtlpReceiver` on a free port of 127.0.0.1, serving in a thread."""
    received = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.paths.append(self.path)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.requests.append(request)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
