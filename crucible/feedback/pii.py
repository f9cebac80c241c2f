"""Scrub personal data (emails, phone numbers) from text before it lands in any table."""

from __future__ import annotations

import re
from dataclasses import dataclass

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# International (+CC ...) or North-American style numbers with separators; at least 7 digits in
# total so that years, prices and GSM8K quantities are left alone.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?!\w)"
)

EMAIL_TOKEN = "[EMAIL]"
PHONE_TOKEN = "[PHONE]"


@dataclass(frozen=True)
class Scrubbed:
    text: str
    redactions: int


def sanitize_pii(text: str) -> Scrubbed:
    """Replace emails with ``[EMAIL]`` and phone numbers with ``[PHONE]``; count what was replaced."""
    text, emails = EMAIL.subn(EMAIL_TOKEN, text)
    text, phones = PHONE.subn(PHONE_TOKEN, text)
    return Scrubbed(text, emails + phones)
