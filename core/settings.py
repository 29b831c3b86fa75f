"""Settings for every Colony process, read from the environment (and `.env`).

The environment variable names are part of the public interface (see README).
Unset external addresses mean "use the embedded default" started by `colony up`.
"""

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_HOST = "127.0.0.1"
POSTGRES_PASSWORD_FILE = "postgres-password"
"""The embedded Postgres superuser's generated password, in the data dir (mode 0600)."""


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class Settings(BaseSettings):
    """Process settings. Construct with `Settings()`; tests pass overrides as keywords."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    data_dir: Path = Field(default=Path(".colony"), validation_alias="COLONY_DATA_DIR")

    # External services; None means the embedded default.
    temporal_address: str | None = Field(default=None, validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field(default="default", validation_alias="TEMPORAL_NAMESPACE")
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    qdrant_url: str | None = Field(default=None, validation_alias="QDRANT_URL")
    # Sent with every request to the QDRANT_URL server (Qdrant's `service.api_key`).
    qdrant_api_key: SecretStr | None = Field(default=None, validation_alias="QDRANT_API_KEY")

    # Model providers.
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    default_model: str | None = Field(default=None, validation_alias="COLONY_DEFAULT_MODEL")
    e2b_api_key: SecretStr | None = Field(default=None, validation_alias="E2B_API_KEY")
    # Encrypts named secrets at rest; unset: a key file in the data dir (one host only).
    secrets_key: SecretStr | None = Field(default=None, validation_alias="COLONY_SECRETS_KEY")
    # Encrypt Temporal payloads (core/codec.py): `id:base64key,...`, the first encrypts,
    # all decrypt; unset: a key file in the data dir (one host only).
    payload_keys: SecretStr | None = Field(default=None, validation_alias="COLONY_PAYLOAD_KEYS")
    # Origins allowed to call the codec endpoint from a browser (the Temporal UI);
    # empty: the embedded UI's own origin.
    codec_cors_origins: list[str] = Field(
        default_factory=list, validation_alias="COLONY_CODEC_CORS_ORIGINS"
    )
    # Keys being rotated out (comma-separated): they decrypt, never encrypt.
    secrets_previous_keys: SecretStr | None = Field(
        default=None, validation_alias="COLONY_SECRETS_PREVIOUS_KEYS"
    )
    # Agents' moderation guardrails: an OpenAI-compatible endpoint (POST {url}/moderations);
    # unset: they use the local lexicon classifier (core/runs/guardrails.py).
    moderation_base_url: str | None = Field(
        default=None, validation_alias="COLONY_MODERATION_BASE_URL"
    )
    moderation_api_key: SecretStr | None = Field(
        default=None, validation_alias="COLONY_MODERATION_API_KEY"
    )
    moderation_model: str = Field(
        default="omni-moderation-latest", validation_alias="COLONY_MODERATION_MODEL"
    )
    otel_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    # A worker process's own Prometheus endpoint (GET /metrics on this port; unset: none).
    # Off by default: replicas on one host would fight over a fixed port, and the endpoint
    # has no auth, so it listens on 127.0.0.1 unless COLONY_METRICS_HOST says otherwise.
    # `colony up` gives each worker it starts a free port and the API aggregates them.
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, validation_alias="COLONY_METRICS_PORT"
    )
    metrics_host: str = Field(default=LOCAL_HOST, validation_alias="COLONY_METRICS_HOST")
    # Worker endpoints the API's /metrics includes, as a JSON object of name -> URL
    # ({"worker-llm": "http://127.0.0.1:9101/metrics"}); each sample gets colony_process.
    metrics_targets: dict[str, str] = Field(
        default_factory=dict, validation_alias="COLONY_METRICS_TARGETS"
    )
    # The tenant whose API keys see every tenant's series at /metrics; another tenant's
    # keys see only the series labelled with their own tenant, and the unlabelled ones.
    # Default: `local`, the tenant of the admin key `colony up` writes.
    metrics_tenant: str = Field(default="local", validation_alias="COLONY_METRICS_TENANT")
    # Log records: JSON lines (one object per record) or text; unset: JSON unless stderr
    # is a terminal (core/logs.py).
    log_format: Annotated[Literal["json", "text"] | None, BeforeValidator(_lower)] = Field(
        default=None, validation_alias="COLONY_LOG_FORMAT"
    )
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = (
        Field(default="INFO", validation_alias="COLONY_LOG_LEVEL")
    )

    # Ports of the embedded stack, all on 127.0.0.1 unless told otherwise.
    temporal_port: int = Field(default=7233, validation_alias="COLONY_TEMPORAL_PORT")
    temporal_ui_port: int = Field(default=8233, validation_alias="COLONY_TEMPORAL_UI_PORT")
    postgres_port: int = Field(default=5433, validation_alias="COLONY_POSTGRES_PORT")
    local_model_port: int = Field(default=8081, validation_alias="COLONY_LOCAL_MODEL_PORT")
    api_host: str = Field(default=LOCAL_HOST, validation_alias="COLONY_API_HOST")
    api_port: int = Field(default=8000, validation_alias="COLONY_API_PORT")
    # The OpenAPI document and its pages (/openapi.json, /docs, /redoc): open by default
    # (README, "The API's documentation"); false removes them.
    api_docs: bool = Field(default=True, validation_alias="COLONY_API_DOCS")
    # Request bodies larger than this are refused with 413 before they are read whole.
    api_max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, validation_alias="COLONY_API_MAX_BODY_BYTES"
    )
    # Default limits of every tenant (core/limits.py); admins override them per tenant at
    # PUT /v1/tenant/limits. Requests per second and burst, per tenant and per API key
    # (0: no limit); active runs and swarms per tenant (0: no limit); spend caps in USD per
    # UTC day and calendar month (unset: no cap).
    rate_limit_rps: float = Field(default=200.0, ge=0, validation_alias="COLONY_RATE_LIMIT_RPS")
    rate_limit_burst: int = Field(default=400, ge=1, validation_alias="COLONY_RATE_LIMIT_BURST")
    key_rate_limit_rps: float = Field(
        default=100.0, ge=0, validation_alias="COLONY_KEY_RATE_LIMIT_RPS"
    )
    key_rate_limit_burst: int = Field(
        default=200, ge=1, validation_alias="COLONY_KEY_RATE_LIMIT_BURST"
    )
    max_active_runs: int = Field(default=1000, ge=0, validation_alias="COLONY_MAX_ACTIVE_RUNS")
    max_active_swarms: int = Field(default=100, ge=0, validation_alias="COLONY_MAX_ACTIVE_SWARMS")
    spend_cap_daily_usd: float | None = Field(
        default=None, ge=0, validation_alias="COLONY_SPEND_CAP_DAILY_USD"
    )
    spend_cap_monthly_usd: float | None = Field(
        default=None, ge=0, validation_alias="COLONY_SPEND_CAP_MONTHLY_USD"
    )

    # Colony as an MCP server at /mcp (docs/mcp-server.md). Host and Origin headers it
    # accepts besides localhost, 127.0.0.1, [::1] and the API's own host (DNS-rebinding
    # protection), as JSON lists: ["colony.example.com"], ["https://app.example.com"].
    mcp_enabled: bool = Field(default=True, validation_alias="COLONY_MCP")
    mcp_allowed_hosts: list[str] = Field(
        default_factory=list, validation_alias="COLONY_MCP_ALLOWED_HOSTS"
    )
    mcp_allowed_origins: list[str] = Field(
        default_factory=list, validation_alias="COLONY_MCP_ALLOWED_ORIGINS"
    )

    # Clients of the API (the CLI).
    api_url: str | None = Field(default=None, validation_alias="COLONY_API_URL")
    api_key: SecretStr | None = Field(default=None, validation_alias="COLONY_API_KEY")

    # Appended to every task queue name: deployments sharing a namespace stay apart.
    task_queue_suffix: str = Field(
        default="", validation_alias="COLONY_TASK_QUEUE_SUFFIX", pattern=r"^[A-Za-z0-9_.-]*$"
    )

    # Worker versioning (docs/deploy.md#upgrades-and-rollback): with a deployment name, every worker
    # registers as version COLONY_DEPLOYMENT_NAME.COLONY_BUILD_ID of that Temporal worker
    # deployment, and a run stays on the version it started on (or moves to the current
    # one, for the long-lived workflows). Unset or empty: unversioned, as `colony up`.
    # The build id defaults to a hash of the workflow code (workers/versioning.py).
    deployment_name: str | None = Field(
        default=None, validation_alias="COLONY_DEPLOYMENT_NAME", pattern=r"^[A-Za-z0-9_-]*$"
    )
    build_id: str | None = Field(
        default=None, validation_alias="COLONY_BUILD_ID", pattern=r"^[A-Za-z0-9_.+-]*$"
    )

    # On SIGTERM a worker stops polling, then waits this long for the activities it is
    # running before cancelling them (Temporal retries a cancelled one elsewhere). 0 cancels
    # at once, right for `colony up`; a deployment sets it a little under its grace period.
    worker_shutdown_grace_s: float = Field(
        default=0, ge=0, le=3600, validation_alias="COLONY_WORKER_SHUTDOWN_GRACE_S"
    )
    # LLM lane: model calls in flight per worker (they mostly wait on the network), and an
    # optional cap on model calls per second across all workers of the task queue.
    llm_max_concurrency: int = Field(
        default=1000, ge=1, validation_alias="COLONY_LLM_MAX_CONCURRENCY"
    )
    llm_rate_limit: float | None = Field(
        default=None, gt=0, validation_alias="COLONY_LLM_RATE_LIMIT"
    )
    # Per provider, per worker process: model calls per second, e.g. {"anthropic": 5}.
    llm_provider_rate_limits: dict[str, float] = Field(
        default_factory=dict, validation_alias="COLONY_LLM_PROVIDER_RATE_LIMITS"
    )

    # Tools hosts: how long a run's workspace call waits for the host holding the workspace
    # before the run takes a new one (files lost); a starting tools worker deletes the
    # workspaces of finished runs and those untouched for this many hours.
    workspace_host_wait_s: float = Field(
        default=20.0, gt=0, validation_alias="COLONY_WORKSPACE_HOST_WAIT_S"
    )
    workspace_max_age_h: float = Field(
        default=168.0, gt=0, validation_alias="COLONY_WORKSPACE_MAX_AGE_H"
    )

    # Seconds between memory maintenance runs (a Temporal Schedule); 0 pauses them.
    memory_maintenance_every: int = Field(
        default=86400, ge=0, validation_alias="COLONY_MEMORY_MAINTENANCE_EVERY"
    )

    # Where the local model server answers (set by `colony up` for its children).
    local_model_url: str | None = Field(default=None, validation_alias="COLONY_LOCAL_MODEL_URL")

    # Public link base for the Temporal UI, when it is not the embedded one.
    temporal_ui_url: str | None = Field(default=None, validation_alias="COLONY_TEMPORAL_UI_URL")

    @cached_property
    def data_path(self) -> Path:
        """Absolute data directory."""
        return self.data_dir.expanduser().resolve()

    @property
    def effective_temporal_address(self) -> str:
        """The Temporal frontend address clients connect to."""
        return self.temporal_address or f"{LOCAL_HOST}:{self.temporal_port}"

    @property
    def effective_database_url(self) -> str:
        """The Postgres URL clients connect to (embedded: database `colony` on our port)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return embedded_postgres_url(self.postgres_port, "colony", self.embedded_postgres_password)

    @property
    def embedded_postgres_password(self) -> str | None:
        """The embedded Postgres password `colony up` generated (None before the first start)."""
        try:
            return (self.data_path / POSTGRES_PASSWORD_FILE).read_text().strip() or None
        except FileNotFoundError:
            return None

    @property
    def effective_local_model_url(self) -> str:
        """OpenAI-compatible base URL of the local model server."""
        return (self.local_model_url or f"http://{LOCAL_HOST}:{self.local_model_port}/v1").rstrip(
            "/"
        )

    @property
    def effective_api_url(self) -> str:
        """Base URL of the Colony API for clients."""
        if self.api_url:
            return self.api_url.rstrip("/")
        host = LOCAL_HOST if self.api_host in ("0.0.0.0", "::") else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def effective_temporal_ui_url(self) -> str | None:
        """Base URL of the Temporal UI, or None when unknown (external Temporal, no UI URL set)."""
        if self.temporal_ui_url:
            return self.temporal_ui_url.rstrip("/")
        if self.temporal_address is None:
            return f"http://localhost:{self.temporal_ui_port}"
        return None

    def workflow_ui_link(self, workflow_id: str) -> str | None:
        """Temporal UI link to a workflow execution, or None without a UI."""
        base = self.effective_temporal_ui_url
        if base is None:
            return None
        return f"{base}/namespaces/{self.temporal_namespace}/workflows/{workflow_id}"


def embedded_postgres_url(port: int, dbname: str, password: str | None) -> str:
    """The superuser URL of an embedded Postgres on `port` (no password: trust auth)."""
    auth = "postgres" if password is None else f"postgres:{quote(password, safe='')}"
    return f"postgresql://{auth}@{LOCAL_HOST}:{port}/{dbname}"
