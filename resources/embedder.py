"""The sentence embedder: which model embeds prompts and responses, in what batch size, on which device."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from crucible.feedback.embeddings import SentenceEmbedder, default_embedding_model


class EmbedderResource(dg.ConfigurableResource):
    """all-MiniLM-L6-v2 by default: the offline package's folder when it is installed, else the hub id.

    ``model`` is a Hugging Face id or a local folder of any encoder; vectors are cached per model, so
    switching the model never mixes vectors of two models."""

    model: str = Field(default_factory=default_embedding_model,
                       description="Hugging Face id or local folder of the sentence encoder.")
    batch_size: int = Field(64, ge=1, description="Texts per forward pass.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N' or 'auto' (a GPU when there is one).")

    def embedder(self) -> SentenceEmbedder:
        return SentenceEmbedder(self.model, batch_size=self.batch_size, device=self.device)
