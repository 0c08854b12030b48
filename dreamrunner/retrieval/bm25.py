"""BM25 over captions, built with bm25s and persisted as memory-mapped arrays.

bm25s was chosen by measurement (docs/benchmarks.md): it precomputes every (caption, term) score into a
sparse matrix, so a query only sums a few columns and picks the top k. We hand it token ids from a
compact flat array instead of Python lists, which keeps a 10M-caption build within a few GB.

On large indexes queries go through `_SparseTopK`, a small numba kernel over bm25s's own matrix: bm25s's
retrieve zeroes and scans a dense score array of every caption per query (about 60 ms at 10M captions
whatever the query), while the kernel touches only the captions that share a term with the query.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..jobs import CancelToken, Progress, ProgressCallback
from .records import CatalogError

# Lucene's BM25 (the variant bm25s calls "lucene"), with its usual parameters.
K1 = 1.5
B = 0.75
# Below this many captions the numpy scorer is as fast as numba and needs no JIT compilation.
NUMBA_MIN_DOCS = 200_000
CHUNK = 100_000


def _stemmer():
    try:
        import Stemmer
    except ImportError:  # PyStemmer is optional: without it words must match exactly
        return None
    return Stemmer.Stemmer("english")


def make_tokenizer():
    import bm25s

    return bm25s.tokenization.Tokenizer(lower=True, stopwords="en", stemmer=_stemmer())


class _FlatDocs:
    """Token ids of every caption in one flat int32 array plus offsets; iterates as per-caption lists."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self.flat = np.zeros(0, dtype=np.int32)
        self.offsets = np.zeros(1, dtype=np.int64)

    def add(self, docs: list[list[int]]) -> None:
        self._lengths.append(np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs)))
        self._chunks.append(np.fromiter((t for d in docs for t in d), dtype=np.int32))

    def finish(self) -> None:
        self.flat = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int32)
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        self.offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self._chunks, self._lengths = [], []

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[list[int]]:
        # Offsets go to Python ints a chunk at a time: all 10M at once would cost ~0.5 GB per pass.
        flat = self.flat
        for first in range(0, len(self), CHUNK):
            offsets = self.offsets[first:first + CHUNK + 1].tolist()
            for start, end in zip(offsets, offsets[1:]):
                yield flat[start:end].tolist()


class _TokenizedCorpus:
    """What bm25s.BM25.index() accepts as an already tokenized corpus: `.ids` and `.vocab`."""

    def __init__(self, ids: _FlatDocs, vocab: dict) -> None:
        self.ids = ids
        self.vocab = vocab


class _SparseTopK:
    """Top-k over the postings of the query terms only (same scores as bm25s, summed from its matrix)."""

    def __init__(self, scores: dict) -> None:
        from numba import njit

        self.data, self.indices, self.indptr = scores["data"], scores["indices"], scores["indptr"]
        self.num_docs = int(scores["num_docs"])
        self._sums: np.ndarray | None = None  # one float32 per caption, all zero between queries
        self._lock = threading.Lock()
        self._accumulate = _accumulate_kernel(njit)

    def __call__(self, term_ids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        terms = np.asarray(term_ids, dtype=np.int64)
        postings = int(sum(self.indptr[t + 1] - self.indptr[t] for t in terms))
        with self._lock:
            if self._sums is None:
                self._sums = np.zeros(self.num_docs, dtype=np.float32)
            touched = np.empty(max(postings, 1), dtype=np.int64)
            count = self._accumulate(self.data, self.indices, self.indptr, terms, self._sums, touched)
            docs = touched[:count]
            values = self._sums[docs]
            self._sums[docs] = 0.0
        if count > k:
            keep = np.argpartition(-values, k)[:k]
            docs, values = docs[keep], values[keep]
        order = np.argsort(-values, kind="stable")
        return docs[order], values[order]


_KERNEL = None


def _accumulate_kernel(njit):
    global _KERNEL
    if _KERNEL is None:
        @njit(cache=True, nogil=True)
        def accumulate(data, indices, indptr, terms, sums, touched):
            count = 0
            for t in terms:
                for j in range(indptr[t], indptr[t + 1]):
                    doc = indices[j]
                    if sums[doc] == 0.0:  # every BM25 term score is > 0, so 0 means "not seen yet"
                        touched[count] = doc
                        count += 1
                    sums[doc] += data[j]
            return count
        _KERNEL = accumulate
    return _KERNEL


class CaptionIndex:
    """BM25 (Lucene variant, k1=1.5, b=0.75) over captions with English stopwords and Snowball stems.

    Document i of the index is the i-th caption it was built from; the catalog maps it to its record.
    """

    def __init__(self, retriever, tokenizer) -> None:
        self._retriever = retriever
        self._tokenizer = tokenizer
        self._sparse = _SparseTopK(retriever.scores) if retriever.backend == "numba" else None

    @property
    def num_docs(self) -> int:
        return int(self._retriever.scores["num_docs"])

    @classmethod
    def build(cls, captions: Iterable[str], total: int | None = None,
              progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> CaptionIndex:
        import bm25s

        tokenizer = make_tokenizer()
        docs = _FlatDocs()
        chunk: list[str] = []
        done = 0

        def flush() -> None:
            nonlocal done
            docs.add(tokenizer.tokenize(chunk, update_vocab=True, show_progress=False, return_as="ids"))
            done += len(chunk)
            chunk.clear()
            if cancel is not None:
                cancel.check()
            if progress is not None:
                progress(Progress("indexing", done, total or done, f"tokenized {done:,} captions"))

        for caption in captions:
            chunk.append(caption)
            if len(chunk) >= CHUNK:
                flush()
        if chunk:
            flush()
        docs.finish()
        if len(docs) == 0:
            raise CatalogError("cannot index an empty catalog")
        retriever = bm25s.BM25(k1=K1, b=B, method="lucene", backend=cls._backend(len(docs)))
        if retriever.backend == "numba":
            # bm25s 0.3 does not switch its CSC builder to numba by itself: the numpy one argsorts packed
            # int64 keys and needs about three times the memory of numba's counting sort.
            retriever.activate_numba_csc()
        retriever.index(_TokenizedCorpus(docs, tokenizer.get_vocab_dict()), show_progress=False)
        if progress is not None:
            progress(Progress("indexing", len(docs), len(docs), f"indexed {len(docs):,} captions"))
        return cls(retriever, tokenizer)

    @staticmethod
    def _backend(num_docs: int) -> str:
        if num_docs < NUMBA_MIN_DOCS:
            return "numpy"
        try:
            import numba  # noqa: F401
        except ImportError:
            return "numpy"
        return "numba"

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._retriever.save(str(folder))
        self._tokenizer.save_vocab(str(folder))
        (folder / "caption_index.json").write_text(json.dumps({"k1": K1, "b": B, "num_docs": self.num_docs}))

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> CaptionIndex:
        import bm25s

        folder = Path(folder)
        if not (folder / "caption_index.json").is_file():
            raise CatalogError(f"{folder} holds no caption index")
        retriever = bm25s.BM25.load(str(folder), mmap=mmap)
        num_docs = int(retriever.scores["num_docs"])
        retriever.backend = cls._backend(num_docs)
        tokenizer = make_tokenizer()
        tokenizer.load_vocab(str(folder))
        return cls(retriever, tokenizer)

    def query_tokens(self, text: str) -> list[str]:
        """The stems of `text` that occur in the index (stopwords and unseen words dropped)."""
        tokenizer, vocab = self._tokenizer, self._retriever.vocab_dict
        stopwords = set(tokenizer.stopwords or ())
        words = [w for w in tokenizer.splitter(text.lower()) if w not in stopwords]
        if tokenizer.stemmer is not None:
            words = [tokenizer.stemmer(w) for w in words]
        return [w for w in dict.fromkeys(words) if w in vocab]

    def search(self, text: str, k: int = 100) -> list[tuple[int, float]]:
        """The top-k (document index, BM25 score) pairs, best first; only documents sharing a term."""
        tokens = self.query_tokens(text)
        if not tokens:
            return []
        k = min(k, self.num_docs)
        if self._sparse is not None:
            docs, scores = self._sparse([self._retriever.vocab_dict[t] for t in tokens], k)
            return [(int(i), float(s)) for i, s in zip(docs, scores)]
        indices, scores = self._retriever.retrieve([tokens], k=k, show_progress=False, n_threads=1)
        return [(int(i), float(s)) for i, s in zip(indices[0], scores[0]) if s > 0]
