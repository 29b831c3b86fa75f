"""LiteLLM, loaded on first use: the one place that imports and configures it.

Everything that needs LiteLLM at run time calls `load_litellm`; other modules import it
only under ``TYPE_CHECKING``, so importing Colony never imports LiteLLM.
"""

import functools
import os
import warnings
from types import ModuleType

COST_MAP_ENV = "LITELLM_LOCAL_MODEL_COST_MAP"
"""Set to ``True`` in the environment (unless already set) before LiteLLM is imported."""


@functools.cache
def load_litellm() -> ModuleType:
    """LiteLLM, imported and configured on first use (once per process).

    Nothing imports LiteLLM at module level: importing it takes about a second, and it
    reads its configuration from the environment at that moment. Before the first
    import this sets `COST_MAP_ENV` to ``True`` unless the operator set it, the only
    change Colony makes to ``os.environ``: otherwise LiteLLM downloads its price map
    from GitHub at import (the bundled copy is used instead). Then it applies LiteLLM's
    process-wide settings once: no debug output, no prompts in logging callbacks, no
    tokenizer downloads, httpx instead of aiohttp.
    """
    os.environ.setdefault(COST_MAP_ENV, "True")
    with warnings.catch_warnings():
        # LiteLLM's own import-time deprecations (none in 1.106) must not fail
        # `filterwarnings = error` runs.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"litellm(\.|$)")
        # LiteLLM's response models build their pydantic schemas on first use, and pydantic
        # warns about the ReadOnly TypedDict items in them: build them here, once, instead
        # of inside the first model call.
        warnings.filterwarnings("ignore", message=r".*`ReadOnly` qualifier", category=UserWarning)
        import litellm
        from litellm.litellm_core_utils import model_response_utils
        from litellm.types.utils import ModelResponse, ModelResponseStream

        ModelResponse()
        ModelResponseStream()

    # LiteLLM 1.106 has no telemetry switch left; these keep it quiet and offline.
    litellm.suppress_debug_info = True
    litellm.turn_off_message_logging = True  # callbacks, if anyone adds them, never see prompts
    litellm.disable_hf_tokenizer_download = True  # token_counter uses the bundled tiktoken files
    # httpx, not LiteLLM's aiohttp transport: aiohttp warns on (and copies) request bodies
    # over 1 MB, which long conversations reach; httpx streams them.
    litellm.disable_aiohttp_transport = True
    if hasattr(model_response_utils, "_attribute_of"):
        model_response_utils._attribute_of = _class_level_attribute_of
    return litellm


def _class_level_attribute_of(source: object, name: str) -> object:
    # LiteLLM 1.106 probes every attribute of each usage chunk's delta, including
    # pydantic's model_fields/model_computed_fields, whose access on an instance is
    # deprecated (PydanticDeprecatedSince211): every streamed call with usage would warn,
    # and fail under `filterwarnings = error`. Its callers skip model_* names anyway,
    # so reading them from the class changes nothing but the warning.
    return getattr(type(source) if name.startswith("model_") else source, name)
