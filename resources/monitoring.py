"""Drift and retraining policy: detector thresholds, the baseline's sources, and the retraining rules."""

from typing import Literal

import dagster as dg
from pydantic import Field

from crucible.monitoring.drift import DriftThresholds
from crucible.monitoring.policy import TRIGGERS, RetrainingPolicy


class DriftPolicyResource(dg.ConfigurableResource):
    """Thresholds of each detector, what a baseline snapshot holds, and the rules that turn the day's
    verdicts, the window's quality and its curated volume into a retraining decision.

    Defaults suit ~64 events a day: PSI over 5 quantile bins (with 10 bins, sampling noise alone
    reaches ~0.4 at that size), KS, chi-squared and rate tests at p < 0.001, MMD at p < 0.01; the
    drift rule asks at least two detectors to agree, so one detector's false alarm (about one in a
    thousand days each) does not retrain.
    """

    psi_threshold: float = Field(0.25, gt=0, description="PSI above this counts as drift (0.1-0.25 is usual).")
    psi_bins: int = Field(5, ge=2, description="Quantile bins of the baseline that PSI compares.")
    ks_p_value: float = Field(0.001, gt=0, lt=1, description="KS p-values below this count as drift.")
    chi2_p_value: float = Field(0.001, gt=0, lt=1, description="Chi-squared p-values (categories) below this drift.")
    js_threshold: float = Field(0.1, gt=0, le=1, description="Jensen-Shannon distance (base 2) above this drifts.")
    proportion_p_value: float = Field(0.001, gt=0, lt=1, description="Two-proportion test p-values (rates).")
    mmd_p_value: float = Field(0.01, gt=0, lt=1, description="MMD permutation p-values (embeddings).")
    mmd_permutations: int = Field(200, ge=10, description="Permutations of the MMD test.")
    embedding_sample: int = Field(256, ge=8, description="Texts per side embedded for MMD (a seeded subsample).")
    embedding_drift: bool = Field(True, description="Embed prompts (the embedder resource) and test them by MMD.")
    plots: bool = Field(True, description="Draw a baseline-vs-day plot per feature.")
    baseline_dataset: str = Field("gsm8k", description="Dataset whose train prompts are the prompts' baseline.")
    baseline_traffic_days: int = Field(7, ge=1, description="Days of served traffic a baseline snapshot takes.")
    rule: Literal["any", "all", "min"] = Field("min", description="Drift rule: any detector, all, or min_drifted.")
    min_drifted: int = Field(2, ge=1, description="Drifted detectors needed under rule 'min'.")
    min_pass_rate: float = Field(0.7, ge=0, le=1, description="Retrain when the window's pass rate is below this.")
    min_quality_events: int = Field(20, ge=1, description="Checked answers a window needs before quality decides.")
    min_curated: int = Field(50, ge=1, description="Retrain when the window holds this many curatable examples.")
    retrain_window_days: int = Field(7, ge=1, description="Days of feedback a retraining curates and trains on.")
    triggers: list[str] = Field(list(TRIGGERS), description=f"Rules switched on, of {', '.join(TRIGGERS)}.")

    def thresholds(self) -> DriftThresholds:
        return DriftThresholds(ks_p_value=self.ks_p_value, psi=self.psi_threshold, psi_bins=self.psi_bins,
                               chi2_p_value=self.chi2_p_value, js_distance=self.js_threshold,
                               proportion_p_value=self.proportion_p_value, mmd_p_value=self.mmd_p_value,
                               mmd_permutations=self.mmd_permutations, embedding_sample=self.embedding_sample)

    def policy(self) -> RetrainingPolicy:
        return RetrainingPolicy(drift_rule=self.rule, min_drifted=self.min_drifted, min_pass_rate=self.min_pass_rate,
                                min_quality_events=self.min_quality_events, min_curated=self.min_curated,
                                window_days=self.retrain_window_days, triggers=tuple(self.triggers))
