"""Feedback ingestion: the inbox folder a sensor watches, the PII key's variable and extra PII patterns."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from crucible.feedback.pii import Scrubber, pii_key_from_env
from crucible.lake import default_home


class FeedbackResource(dg.ConfigurableResource):
    """Where feedback files arrive and how personal data in them is treated.

    The pseudonymization key itself never sits in config: only the name of the environment variable
    holding it. Without user ids in the data no key is needed.
    """

    inbox: str = Field(default_factory=lambda: f"{default_home()}/feedback_inbox",
                       description="Folder watched for feedback files (.jsonl, .ndjson, .parquet, .csv; "
                                   "*.signals.* hold signals). Write a file elsewhere and move it in.")
    pii_key_env: str = Field("CRUCIBLE_PII_KEY",
                             description="Environment variable holding the key user ids are pseudonymized with.")
    extra_pii_patterns: dict[str, str] = Field(
        default_factory=dict, description="Extra PII regexes by name; matches are replaced by [NAME].")

    def scrubber(self) -> Scrubber:
        return Scrubber(self.extra_pii_patterns or None)

    def user_key(self) -> bytes:
        """The pseudonymization key; raises naming the variable when it is unset."""
        return pii_key_from_env(self.pii_key_env)

    def user_key_if_set(self) -> bytes | None:
        """The key, or None when the variable is unset (ingestion then refuses records with user ids)."""
        try:
            return self.user_key()
        except RuntimeError:
            return None

    def inbox_path(self) -> Path:
        path = Path(self.inbox)
        path.mkdir(parents=True, exist_ok=True)
        return path
