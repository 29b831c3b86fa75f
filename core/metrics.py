"""Prometheus metrics exposed at `/metrics` (API) — one registry per process."""

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "colony_http_requests_total",
    "HTTP requests served by the API",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "colony_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    registry=REGISTRY,
)
WORKFLOWS_STARTED = Counter(
    "colony_workflows_started_total",
    "Workflows started through the API",
    ["kind"],
    registry=REGISTRY,
)
GUARDRAIL_TRIGGERS = Counter(
    "colony_guardrail_triggers_total",
    "Guardrail triggers recorded in the safety log (by the worker process that enforced them)",
    ["guardrail", "stage", "action"],
    registry=REGISTRY,
)
