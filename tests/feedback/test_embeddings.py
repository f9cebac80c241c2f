"""Sentence embeddings with the real all-MiniLM-L6-v2: they agree with sentence-transformers, do not depend on
batching, and the Delta cache embeds each text once and gives the vectors back bit for bit."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from crucible.feedback.embeddings import (
    MINILM_ID,
    SentenceEmbedder,
    cached_embeddings,
    decode_vector,
    default_embedding_model,
    embed_cached,
    offline_minilm_path,
)
from resources.embedder import EmbedderResource
from schemas import EMBEDDINGS

TEXTS = [
    "How many clips did Natalia sell in April and May?",
    "Natalia sold 48 clips in April and 24 in May, so 72 in total.",
    "I'm sorry, but I can't help with that.",
    "The capital of France is Paris.",
    "x",
    "A very long prompt that goes on and on about the details of the situation. " * 40,  # past 256 tokens
]


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder(offline_minilm_path(), batch_size=4)


@pytest.mark.slow  # loads sentence-transformers as well as the model (~15 s on 2 busy cores)
def test_matches_sentence_transformers(embedder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(offline_minilm_path(), device="cpu").encode(TEXTS, normalize_embeddings=True)
    vectors = embedder.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() >= 0.999, cosines
    # Different texts are different vectors: the pooling does not collapse them.
    assert float(vectors[0] @ vectors[1]) < 0.95 and float(vectors[0] @ vectors[3]) < 0.5


@pytest.mark.slow  # a dozen forward passes, one over 256 tokens
def test_vectors_do_not_depend_on_batching_or_order(embedder):
    together = embedder.embed(TEXTS)  # batches of 4, padded to the longest text of each
    one_by_one = np.stack([embedder.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(TEXTS[::-1]), together[::-1], atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_the_cache_embeds_each_text_once_and_round_trips_bit_exactly(lake, embedder):
    texts = [TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[2], TEXTS[1]]  # duplicates, out of order
    before = embedder.texts_embedded
    first = cached_embeddings(lake, embedder, texts)
    assert (first.hits, first.misses) == (0, 3)
    assert embedder.texts_embedded - before == 3  # each distinct text once
    assert first.vectors.tobytes() == first.vectors[[0, 1, 0, 3, 1]].tobytes()  # duplicates share a vector
    np.testing.assert_allclose(first.vectors, embedder.embed(texts), atol=1e-6)

    stored = lake.read(EMBEDDINGS)
    assert len(stored) == 3 and set(stored["model"]) == {MINILM_ID} and set(stored["dim"]) == {384}
    expected_keys = {hashlib.sha256(f"{MINILM_ID}\0{t}".encode()).hexdigest() for t in texts}
    assert set(stored["text_hash"]) == expected_keys

    counted = embedder.texts_embedded
    again = embed_cached(lake, embedder, texts)
    assert embedder.texts_embedded == counted  # nothing embedded the second time
    assert again.tobytes() == first.vectors.tobytes()
    by_key = {row.text_hash: decode_vector(row.vector, row.dim) for row in stored.itertuples()}
    key = hashlib.sha256(f"{MINILM_ID}\0{texts[3]}".encode()).hexdigest()
    assert by_key[key].tobytes() == first.vectors[3].tobytes()

    # A new text among cached ones: only it is embedded, and the order of the answer follows the input.
    mixed = cached_embeddings(lake, embedder, [TEXTS[3], TEXTS[0]])
    assert (mixed.hits, mixed.misses) == (1, 1) and embedder.texts_embedded == counted + 1
    assert mixed.vectors[1].tobytes() == first.vectors[0].tobytes()
    assert len(lake.read(EMBEDDINGS)) == 4


def test_the_cache_separates_models(lake, embedder):
    # The same text under another model id gets its own row, never the first model's vector.
    other = SentenceEmbedder(offline_minilm_path(), model_id="another-model")
    cached_embeddings(lake, embedder, [TEXTS[0]])
    result = cached_embeddings(lake, other, [TEXTS[0]])
    assert result.misses == 1
    assert sorted(lake.read(EMBEDDINGS)["model"]) == ["another-model", MINILM_ID]


def test_model_ids_follow_the_weights_not_the_folder(tmp_path):
    assert SentenceEmbedder(offline_minilm_path()).model_id == MINILM_ID
    assert SentenceEmbedder(MINILM_ID).model_id == MINILM_ID
    folders = []
    for name, weights in (("a", b"weights-1"), ("b", b"weights-1"), ("c", b"weights-2")):
        folder = tmp_path / name / "encoder"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text('{"hidden_size": 8}')
        (folder / "model.safetensors").write_bytes(weights)
        folders.append(SentenceEmbedder(str(folder)).model_id)
    assert folders[0] == folders[1] != folders[2]
    assert folders[0].startswith("local:encoder@")


def test_a_missing_model_is_named():
    with pytest.raises(OSError, match="embedding model '/nowhere/encoder' cannot be loaded"):
        SentenceEmbedder("/nowhere/encoder").embed(["hi"])


def test_the_resource_defaults_to_the_offline_minilm():
    resource = EmbedderResource()
    assert resource.model == default_embedding_model() == offline_minilm_path()
    built = resource.embedder()
    assert (built.model_id, built.batch_size, built.device) == (MINILM_ID, 64, "cpu")
