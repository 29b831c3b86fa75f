"""OpenTelemetry setup shared by the API, the workers and the CLI.

Spans go to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise a
tracer provider still exists (so instrumentation runs and tests can read spans) and
exports nowhere. Colony's own spans are made in `core.tracing`. Metrics for `/metrics` are Prometheus counters in `core.metrics`.
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
        trace.set_tracer_provider(tracer_provider(settings, service_name))
        _configured = True


def tracer_provider(settings: Settings, service_name: str) -> TracerProvider:
    """A tracer provider that batches spans to `settings.otel_endpoint` (OTLP/HTTP).

    Without an endpoint it exports nowhere (instrumentation still runs). `setup_tracing`
    installs one as the global provider; tests build their own.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = _exporter(settings)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporter(settings: Settings) -> SpanExporter | None:
    if not settings.otel_endpoint:
        return None
    # Imported lazily: the OTLP exporter pulls in protobuf/requests machinery.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The endpoint is the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is for
    # every OTLP exporter; traces go to its /v1/traces.
    return OTLPSpanExporter(endpoint=settings.otel_endpoint.rstrip("/") + "/v1/traces")
