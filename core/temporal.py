"""The Temporal plugin and client factory every Colony process uses.

One plugin carries the pydantic data converter (frozen pydantic payloads in and out of
every workflow, activity, signal and update) and the OpenTelemetry tracing interceptor,
so client, workers and replayers agree on both.
"""

from opentelemetry.trace import Tracer
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.plugin import SimplePlugin
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from core.settings import Settings

PLUGIN_NAME = "colony.ColonyPlugin"

PASSTHROUGH_MODULES = ("core", "pydantic", "pydantic_core", "annotated_types")
"""Imported once per process instead of once per workflow run in Temporal's sandbox.

Re-importing `core` rebuilt every payload model for each new workflow: about 50 ms of
CPU per workflow, which serialized a swarm's children (docs/benchmarks.md). `core` does
no I/O at import and keeps no mutable module state, and workflows call only its pure
functions, so sharing it cannot leak state between runs."""


class ColonyPlugin(SimplePlugin):
    """Data converter + tracing, for `Client.connect`, workers and `Replayer`."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        """Build the plugin; `tracer` defaults to the global provider's (tests pass their own)."""
        super().__init__(
            PLUGIN_NAME,
            data_converter=pydantic_data_converter,
            interceptors=[TracingInterceptor(tracer)],
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_modules(
                    *PASSTHROUGH_MODULES
                )
            ),
        )


async def connect(settings: Settings, *, address: str | None = None) -> Client:
    """Connect a Temporal client with the Colony plugin.

    Args:
        settings: Process settings (address and namespace).
        address: Override of the frontend address (tests).
    """
    return await Client.connect(
        address or settings.effective_temporal_address,
        namespace=settings.temporal_namespace,
        plugins=[ColonyPlugin()],
    )
