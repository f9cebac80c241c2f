"""Promotion policy: which benchmarks gate registration, and how sure the gate must be of a regression."""

import dagster as dg
from pydantic import Field, field_validator


class PromotionPolicyResource(dg.ConfigurableResource):
    """A candidate is blocked on a gated benchmark when it is worse than production by more than
    ``min_effect`` and the paired test's Holm-adjusted p-value (over the gated benchmarks) is at most
    ``alpha``. Benchmarks the candidate was not evaluated on are not gated."""

    gated_benchmarks: list[str] = Field(default_factory=lambda: ["mmlu", "gsm8k", "humaneval", "norobots"],
                                        description="Benchmarks on which a significantly worse candidate is blocked.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Family-wise significance level (Holm-adjusted).")
    min_effect: float = Field(0.0, ge=0, description="Smallest drop below production that can block.")

    @field_validator("gated_benchmarks")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        from crucible.evaluate.benchmarks import BENCHMARKS

        unknown = [name for name in names if name not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown gated benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")
        return names
