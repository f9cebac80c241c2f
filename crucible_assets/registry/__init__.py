"""Registry assets and the name under which the retraining chain registers its model."""

MODEL_NAME = "crucible-sft"
