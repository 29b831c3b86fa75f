"""OpenTelemetry setup shared by the API, the workers and the CLI.

Spans go to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise a
tracer provider still exists (so instrumentation runs and tests can read spans) and
exports nowhere. Metrics for `/metrics` are Prometheus counters in `core.metrics`.
"""

import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from core.settings import Settings

_lock = threading.Lock()
_configured = False


def setup_tracing(settings: Settings, service_name: str) -> None:
    """Install the global tracer provider once per process.

    Args:
        settings: Process settings (reads `otel_endpoint`).
        service_name: `service.name` resource attribute, e.g. `colony-worker`.
    """
    global _configured
    with _lock:
        if _configured:
            return
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        exporter = _exporter(settings)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _configured = True


def _exporter(settings: Settings) -> SpanExporter | None:
    if not settings.otel_endpoint:
        return None
    # Imported lazily: the OTLP exporter pulls in protobuf/requests machinery.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.otel_endpoint.rstrip("/") + "/v1/traces")
