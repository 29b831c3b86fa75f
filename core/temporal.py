"""The Temporal plugin and client factory every Colony process uses.

One plugin carries the pydantic data converter (frozen pydantic payloads in and out of
every workflow, activity, signal and update), the payload encryption codec
(`core.codec`, failure messages included), the OpenTelemetry tracing interceptor and the
activity latency metrics (`core.temporal_metrics`), so client, workers and replayers agree.
"""

import functools
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import Tracer
from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.client import Client
from temporalio.common import VersioningBehavior
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
)
from temporalio.plugin import SimplePlugin
from temporalio.worker import (
    WorkerConfig,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.workflow import Info as WorkflowInfo

from core import temporal_metrics
from core.codec import codec_from_settings
from core.settings import Settings
from core.specs import PAYLOAD_CONTEXT

PLUGIN_NAME = "colony.ColonyPlugin"

PASSTHROUGH_MODULES = ("core", "pydantic", "pydantic_core", "annotated_types")
"""Imported once per process instead of once per workflow run in Temporal's sandbox.

Re-importing `core` rebuilt every payload model for each new workflow: about 50 ms of
CPU per workflow, which serialized a swarm's children (docs/benchmarks.md). `core` does
no I/O at import and keeps no mutable module state, and workflows call only its pure
functions, so sharing it cannot leak state between runs."""


class _PayloadJson(PydanticJSONPlainPayloadConverter):
    """Pydantic's JSON converter, decoding with `PAYLOAD_CONTEXT`.

    Fields a newer Colony added to a `core.specs.Spec` are dropped instead of failing
    the workflow task.
    """

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        adapter = _adapter(type_hint if type_hint is not None else Any)
        return adapter.validate_json(payload.data, context=PAYLOAD_CONTEXT)


def _adapter(hint: Any) -> TypeAdapter[Any]:
    try:
        return _cached_adapter(hint)
    except TypeError:  # an unhashable hint
        return TypeAdapter(hint)


@functools.lru_cache(maxsize=1024)
def _cached_adapter(hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(hint)


class PayloadConverter(CompositePayloadConverter):
    """Temporal's default converters, with JSON through `_PayloadJson`."""

    def __init__(self) -> None:
        json_converter = _PayloadJson()
        super().__init__(
            *(
                json_converter if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = DataConverter(payload_converter_class=PayloadConverter)
"""Colony's payload conversion without encryption (payload compatibility tests)."""


def data_converter(codec: PayloadCodec) -> DataConverter:
    """Every Colony client, worker and replayer's converter.

    `PayloadConverter`, then `codec`; failure messages and stack traces travel as an
    encoded payload too.
    """
    return DataConverter(
        payload_converter_class=PayloadConverter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


class UnversionedRunner(WorkflowRunner):
    """`inner`, with the workflows' versioning behavior left out of their task completions.

    Colony's workflows declare a versioning behavior (PINNED or AUTO_UPGRADE) for
    versioned deployments (workers/versioning.py), and Temporal refuses a completion that
    names one from a worker that is not versioned: `colony up` and most tests run the
    same classes on unversioned workers through this runner.
    """

    def __init__(self, inner: WorkflowRunner) -> None:
        """Wrap `inner` (the sandbox)."""
        self.inner = inner

    def prepare_workflow(self, defn: Any) -> None:
        """See `WorkflowRunner.prepare_workflow`."""
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """See `WorkflowRunner.create_instance`."""
        return _UnversionedInstance(self.inner.create_instance(det))

    def set_worker_level_failure_exception_types(
        self, types: Sequence[type[BaseException]]
    ) -> None:
        """See `WorkflowRunner.set_worker_level_failure_exception_types`."""
        self.inner.set_worker_level_failure_exception_types(types)


class _UnversionedInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance) -> None:
        self._inner = inner

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        completion = self._inner.activate(act)
        if completion.HasField("successful"):
            completion.successful.versioning_behavior = VersioningBehavior.UNSPECIFIED.value
        return completion

    def get_serialization_context(self, command_info: Any) -> Any:
        return self._inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self._inner.get_external_store_context(command_info)

    def get_info(self) -> WorkflowInfo:
        return self._inner.get_info()

    def get_thread_id(self) -> int | None:
        return self._inner.get_thread_id()


class ColonyPlugin(SimplePlugin):
    """Data converter (with encryption) + tracing, for clients, workers and `Replayer`.

    Workers that are not versioned run workflows through `UnversionedRunner`.
    """

    def __init__(self, settings: Settings | None = None, *, tracer: Tracer | None = None) -> None:
        """Build the plugin.

        Args:
            settings: Where the payload keys come from; defaults to the environment.
            tracer: Defaults to the global provider's (tests pass their own).
        """
        codec = codec_from_settings(settings if settings is not None else Settings())
        super().__init__(
            PLUGIN_NAME,
            data_converter=data_converter(codec),
            interceptors=[TracingInterceptor(tracer), temporal_metrics.ActivityMetrics()],
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_modules(
                    *PASSTHROUGH_MODULES
                )
            ),
        )

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        """The plugin's worker settings; an unversioned worker's runner is `UnversionedRunner`."""
        config = super().configure_worker(config)
        deployment = config.get("deployment_config")
        runner = config.get("workflow_runner")
        if runner is not None and (deployment is None or not deployment.use_worker_versioning):
            config["workflow_runner"] = UnversionedRunner(runner)
        return config


async def connect(
    settings: Settings, *, address: str | None = None, tracer: Tracer | None = None
) -> Client:
    """Connect a Temporal client with the Colony plugin.

    Args:
        settings: Process settings (address and namespace).
        address: Override of the frontend address (tests).
        tracer: The tracing interceptor's; defaults to the global provider's.
    """
    return await Client.connect(
        address or settings.effective_temporal_address,
        namespace=settings.temporal_namespace,
        plugins=[ColonyPlugin(settings, tracer=tracer)],
        runtime=temporal_metrics.runtime(),  # Temporal's metrics join core.metrics.REGISTRY
    )
