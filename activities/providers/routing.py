"""Which endpoint, key and LiteLLM model a Colony model id goes to."""

from dataclasses import dataclass, field

from pydantic import SecretStr

from activities.providers.litellm_loader import load_litellm
from core.settings import Settings

LOCAL_PLACEHOLDER_KEY = "not-needed"
"""Sent to OpenAI-compatible servers that ignore keys (llama.cpp, vLLM without auth)."""

OPENAI_API_BASE = "https://api.openai.com/v1"


@dataclass(frozen=True)
class ResolvedModel:
    """Where and how LiteLLM reaches a Colony model id."""

    litellm_model: str
    api_base: str | None
    api_key: str | None = field(repr=False)
    provider: str  # circuit-breaker and rate-limit key: the id's prefix
    openai_wire: bool = False  # called directly over the OpenAI protocol (openai_wire.py)


def resolve(model_id: str, settings: Settings) -> ResolvedModel:
    """Map a Colony model id to the LiteLLM model, endpoint and key to call it with.

    ``openai/...`` honours ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``, ``anthropic/...``
    uses ``ANTHROPIC_API_KEY``, ``ollama/...`` passes through and ``local/smollm2-135m``
    goes to the local llama.cpp server. Unknown prefixes pass through to LiteLLM unchanged
    (with its own environment-based defaults).
    """
    provider, _, name = model_id.partition("/")
    if not name:
        provider = _guess_provider(model_id)
    if provider == "openai":
        base = settings.openai_base_url.rstrip("/") if settings.openai_base_url else None
        key = _secret(settings.openai_api_key)
        if key is None and base is not None:
            key = LOCAL_PLACEHOLDER_KEY
        return ResolvedModel(model_id, base, key, provider, openai_wire=True)
    if provider == "anthropic":
        return ResolvedModel(model_id, None, _secret(settings.anthropic_api_key), provider)
    if provider == "local":
        # llama.cpp's OpenAI-compatible server serves the model under its Colony id.
        return ResolvedModel(
            f"openai/{model_id}",
            settings.effective_local_model_url,
            LOCAL_PLACEHOLDER_KEY,
            provider,
            openai_wire=True,
        )
    return ResolvedModel(model_id, None, None, provider)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _guess_provider(model_id: str) -> str:
    try:
        return str(load_litellm().get_llm_provider(model_id)[1])
    except Exception:
        return model_id
