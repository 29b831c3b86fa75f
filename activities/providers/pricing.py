"""What a model call costs: token counts and prices from LiteLLM's bundled table."""

import functools
from typing import TYPE_CHECKING, Any

from activities.providers.litellm_loader import load_litellm
from activities.providers.openai_wire import message_to_openai, tools_to_openai
from activities.providers.routing import ResolvedModel, resolve
from core.payloads import ChatMessage, ModelRequest, ModelUsage
from core.settings import Settings

if TYPE_CHECKING:
    from litellm.types.llms.openai import ChatCompletionToolParam


def estimate_usage(
    resolved: ResolvedModel,
    messages: list[dict[str, Any]],
    tools: "list[ChatCompletionToolParam] | None",
    answer: ChatMessage,
) -> ModelUsage:
    """Usage counted offline, for an answer that came without it (zeros if uncountable)."""
    # The provider sent no usage chunk (some OpenAI-compatible servers ignore
    # stream_options): estimate with LiteLLM's tokenizer (bundled tiktoken, offline).
    # Estimates are approximate, and so is the cost computed from them.
    completion = (answer.content or "") + "".join(c.name + c.arguments for c in answer.tool_calls)
    try:
        prompt_tokens = _prompt_tokens(resolved, messages, tools)
        completion_tokens = (
            load_litellm().token_counter(
                model=resolved.litellm_model, text=completion, count_response_tokens=True
            )
            if completion
            else 0
        )
    except Exception:
        return ModelUsage()
    return ModelUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def _prompt_tokens(
    resolved: ResolvedModel,
    messages: list[dict[str, Any]],
    tools: "list[ChatCompletionToolParam] | None",
) -> int:
    return int(
        load_litellm().token_counter(
            model=resolved.litellm_model,
            messages=messages,
            tools=tools or None,
        )
    )


def estimate_prompt_cost(request: ModelRequest, settings: Settings) -> float | None:
    """Approximate USD cost of the prompt alone, before calling (budget checks).

    Tokens are counted offline with LiteLLM's tokenizer; None when the model's price
    (or the count) is unknown, 0.0 for the local model.
    """
    resolved = resolve(request.model, settings)
    messages = [message_to_openai(m) for m in request.messages]
    try:
        tokens = _prompt_tokens(resolved, messages, tools_to_openai(request))
    except Exception:
        return None
    return cost_usd(resolved, ModelUsage(prompt_tokens=tokens))


def cost_usd(resolved: ResolvedModel, usage: ModelUsage) -> float | None:
    """USD cost of ``usage`` from LiteLLM's bundled price table; None when unpriced.

    The local model runs on our own hardware, so its price is known: zero.
    """
    if resolved.provider == "local":
        return 0.0
    if not _priced(resolved.litellm_model):
        return None
    try:
        prompt_cost, completion_cost = load_litellm().cost_per_token(
            model=resolved.litellm_model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
    except Exception:  # ModelNotMappedError and friends: the price is unknown
        return None
    return float(prompt_cost) + float(completion_cost)


def model_info(model: str) -> dict[str, Any]:
    """LiteLLM's bundled facts about a model (limits, prices); {} when it does not know it."""
    try:
        return dict(load_litellm().get_model_info(model))
    except Exception:
        return {}


@functools.lru_cache(maxsize=1024)
def _priced(litellm_model: str) -> bool:
    # For an unpriced model LiteLLM searches its whole price table and raises, on every
    # call; the table is bundled and fixed for the life of the process.
    try:
        load_litellm().cost_per_token(model=litellm_model, prompt_tokens=1, completion_tokens=1)
    except Exception:
        return False
    return True
