"""Running models: one engine for evaluation, feedback traffic and serving (generation and scoring)."""

from crucible.inference.engine import (
    Generation,
    GenerationRequest,
    InferenceEngine,
    Loglikelihood,
    LoglikelihoodRequest,
)

__all__ = ["Generation", "GenerationRequest", "InferenceEngine", "Loglikelihood", "LoglikelihoodRequest"]
