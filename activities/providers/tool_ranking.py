"""Ranks the offered tools against the user's words, for the JSON tool protocol.

A 135M-parameter model cannot judge whether a question needs a tool, or which one; the
embedding model already in the stack (all-MiniLM-L6-v2) judges that far better. Scores
are cosine similarities of the user's message and each tool's name and description
(`json_protocol.tool_text`); `json_protocol.plan_turn` turns them into what the model may say.
The model loads on first use (about 0.3 s) in the process that calls the local model.
"""

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from activities.providers.embeddings import MiniLmEmbedder
from core.errors import ConfigError

_CACHE_SIZE = 2048
_lock = threading.Lock()
_embedder: MiniLmEmbedder | None = None
_unavailable = False
_cache: "OrderedDict[str, np.ndarray]" = OrderedDict()


def scores(query: str, texts: Sequence[str]) -> list[float] | None:
    """Cosine similarity of `query` and each text; None when the model is not installed.

    Blocking (run it in a thread). Tool texts are cached: they repeat on every call.
    """
    model = _model()
    if model is None or not texts:
        return None
    with _lock:
        missing = [t for t in dict.fromkeys(texts) if t not in _cache]
    vectors = model.embed([query, *missing])
    with _lock:
        for text, vector in zip(missing, vectors[1:], strict=True):
            _cache[text] = vector
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        tools = np.stack([_cache[t] for t in texts])
    return [float(s) for s in tools @ vectors[0]]


def best_scores(query: str, texts: Sequence[Sequence[str]]) -> list[float] | None:
    """For each item (a tool's texts), the best similarity of `query` and any of its texts."""
    flat = [t for item in texts for t in item]
    found = scores(query, flat)
    if found is None:
        return None
    best, start = [], 0
    for item in texts:
        best.append(max(found[start : start + len(item)], default=-1.0))
        start += len(item)
    return best


def _model() -> MiniLmEmbedder | None:
    global _embedder, _unavailable
    with _lock:
        if _embedder is None and not _unavailable:
            try:
                _embedder = MiniLmEmbedder()
            except ConfigError:
                _unavailable = True  # the model chooses unaided (json_protocol.plan_turn)
        return _embedder
