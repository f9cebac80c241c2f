"""Drift policy: which thresholds count as drift, shared by the drift report and the retraining sensor."""

import dagster as dg


class DriftPolicyResource(dg.ConfigurableResource):
    psi_threshold: float = 0.2
    ks_p_value: float = 0.01
    baseline_dataset: str = "gsm8k"
    retrain_window_days: int = 7
