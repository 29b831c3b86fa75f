"""Temporal's metrics in Colony's Prometheus registry.

Two parts:

- `runtime()`: the process's Temporal `Runtime`, whose SDK metrics (`temporal_*`:
  polls, task latencies, slots, sticky cache, requests...) go into a `MetricBuffer` that
  `SdkMetrics` drains into `core.metrics.REGISTRY`, so they are served on the same
  endpoint as Colony's own series. A Runtime is process-wide and costly (its own
  threads), so there is one, created on first use; every client `core.temporal.connect`
  builds uses it. Clients built otherwise (tests' `WorkflowEnvironment`) keep
  Temporal's default runtime and report nothing.
- `ActivityMetrics`: a worker interceptor timing every activity attempt into
  `colony_activity_duration_seconds{lane, activity, status}`.
"""

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from temporalio import activity
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from core import metrics
from core.queues import TaskQueue

BUFFER_SIZE = 100_000
"""Updates held between drains; a full buffer drops updates (and Temporal logs it)."""

DRAIN_EVERY_S = 1.0
"""How often a background thread drains the buffer when nobody scrapes."""

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))
"""Histogram buckets of Temporal's duration metrics, in seconds."""

_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The process's Temporal runtime, its metrics bridged into `core.metrics.REGISTRY`."""
    global _runtime
    with _lock:
        if _runtime is None:
            buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
            created = Runtime(telemetry=TelemetryConfig(metrics=buffer))
            sdk = SdkMetrics(buffer)
            metrics.REGISTRY.register(sdk)
            threading.Thread(target=sdk.drain_forever, name="temporal-metrics", daemon=True).start()
            _runtime = created
        return _runtime


class _Histogram:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.buckets[i] += 1
                break


class SdkMetrics(Collector):
    """Temporal's buffered metric updates, kept as Prometheus counters, gauges, histograms."""

    def __init__(self, buffer: MetricBuffer) -> None:
        """Drain `buffer` (of the runtime it was given to)."""
        self._buffer = buffer
        self._lock = threading.Lock()
        # name -> (kind, description, {labels: value or _Histogram})
        self._series: dict[str, tuple[int, str, dict[tuple[tuple[str, str], ...], Any]]] = {}

    def drain(self) -> None:
        """Fold the updates buffered since the last drain into the series."""
        with self._lock:
            for update in self._buffer.retrieve_updates():
                metric = update.metric
                entry = self._series.get(metric.name)
                if entry is None:
                    entry = self._series[metric.name] = (metric.kind, metric.description or "", {})
                series = entry[2]
                labels = tuple(sorted((k, str(v)) for k, v in update.attributes.items()))
                if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
                    series[labels] = series.get(labels, 0) + update.value
                elif metric.kind == BUFFERED_METRIC_KIND_GAUGE:
                    series[labels] = update.value
                else:
                    histogram = series.get(labels)
                    if histogram is None:
                        histogram = series[labels] = _Histogram()
                    histogram.observe(float(update.value))

    def drain_forever(self) -> None:
        """Drain every `DRAIN_EVERY_S` (a daemon thread): the buffer must not fill up."""
        while True:
            time.sleep(DRAIN_EVERY_S)
            self.drain()

    def collect(self) -> Iterator[Metric]:
        """The series as of now (drained first)."""
        self.drain()
        with self._lock:
            snapshot = [
                (name, kind, doc, dict(series))
                for name, (kind, doc, series) in self._series.items()
            ]
        for name, kind, doc, series in snapshot:
            yield _family(name, kind, doc, series)


def _family(name: str, kind: int, doc: str, series: dict[Any, Any]) -> Metric:
    if kind == BUFFERED_METRIC_KIND_COUNTER:
        family = Metric(name.removesuffix("_total"), doc, "counter")
        for labels, value in series.items():
            family.add_sample(family.name + "_total", dict(labels), float(value))
    elif kind == BUFFERED_METRIC_KIND_GAUGE:
        family = Metric(name, doc, "gauge")
        for labels, value in series.items():
            family.add_sample(name, dict(labels), float(value))
    else:
        family = Metric(name, doc, "histogram")
        for labels, histogram in series.items():
            cumulative = 0
            for bound, count in zip(BUCKETS, histogram.buckets, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else str(bound)
                family.add_sample(name + "_bucket", {**dict(labels), "le": le}, cumulative)
            family.add_sample(name + "_count", dict(labels), histogram.count)
            family.add_sample(name + "_sum", dict(labels), histogram.sum)
    return family


# -- activity latency by lane ----------------------------------------------------------


_LONGEST_FIRST = tuple(sorted(TaskQueue, key=lambda q: len(q.value), reverse=True))
"""The queues, a queue whose name extends another's first (so the longer one matches)."""


def lane_of(task_queue: str) -> str:
    """The lane of a task queue, whatever suffix or workspace-host tail it carries."""
    for queue in _LONGEST_FIRST:
        if task_queue.startswith(queue.value):
            return queue.lane
    return "other"


class ActivityMetrics(Interceptor):
    """Times every activity attempt into `colony_activity_duration_seconds`."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap the activity inbound chain."""
        return _TimedActivity(next)


class _TimedActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        started = time.perf_counter()
        status = "error"
        try:
            result = await super().execute_activity(input)
            status = "ok"
            return result
        finally:
            metrics.ACTIVITY_LATENCY.labels(
                lane_of(info.task_queue), info.activity_type, status
            ).observe(time.perf_counter() - started)
