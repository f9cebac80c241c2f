"""Scrub personal data (emails, phones, SSNs, cards, IBANs, IPs, access keys, tokens) from text before it is stored.

Every detector is a shape (a regex) plus a validator (Luhn, mod-97, SSN rules, octet ranges, ...), so that
look-alikes such as order numbers, dates, versions, ISBNs, UUIDs and hashes stay byte-identical. Rules that
decide ambiguous cases:

- Phones need a phone shape: ``+`` and 8-15 digits (E.164, with or without separators), a North-American
  number with an area code and separators (``415-555-0132``, ``(415) 555-0132``, ``1 415 555 0132``), a
  parenthesised area code (``(020) 7946 0958``) or a trunk-0 national number in groups (``020 7946 0958``,
  ``06 12 34 56 78``). Bare digit runs (``4155550132``, ``order 20231145``) are never phones.
- A number directly continued by a separator and another digit (``415-555-0132-7``, ``... 0132 5``) is
  part of a longer number and is left alone, for every numeric detector.
- A valid dotted quad is an IP, except right after a version marker (``v1.2.3.4``, ``version 1.2.3.4``,
  ``build: 10.0.1.2``). Octets with a leading zero (``01.2.3.4``) are ambiguous and left alone.
- IBANs are upper case, compact or in groups of four; SSNs are ``ddd-dd-dddd`` / ``ddd dd dddd`` or nine
  digits right after an SSN label; AWS secrets only after an ``aws_secret_access_key``-style label.
- Extra patterns from config run first, so a deployment's own identifiers win over the built-in shapes.

Bulk paths (``Scrubber.scrub_column``, fastest, and ``scrub_many``): every detector has a gate, a
lookaround-free necessary condition; one cheap pattern implied by every gate pre-filters the whole column in
C++ (pyarrow's RE2, slices on several cores), the gates of the distinct flagged texts are evaluated there too,
and Python runs only the detectors they open, once per distinct text.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

EMAIL_TOKEN = "[EMAIL]"
PHONE_TOKEN = "[PHONE]"
KINDS = ("EMAIL", "PHONE", "SSN", "CARD", "IBAN", "IP", "ACCESS_KEY", "TOKEN")


@dataclass(slots=True)
class Scrubbed:
    """Scrubbed text, how many values were replaced, and how many of each kind (``{"EMAIL": 1}``).

    Not frozen: a bulk scrub builds one per row, and frozen dataclasses cost twice as much to create.
    """

    text: str
    redactions: int
    kinds: dict[str, int] = field(default_factory=dict)


# A replacement for a regex match, or None to keep the match as it is (it failed validation).
_Check = Callable[[re.Match], "str | None"]

# Numbers must not be glued to a longer number: no word char before/after, and no separator+digit
# continuation ("415-555-0132-7", "123-45-6789 0").
_NUM_RIGHT = r"(?!\w)(?![ .,/-]\d)"
# The same left boundary, written after the first character ("." in the lookbehind is that character):
# a pattern that starts with a character class lets Python's regex engine skip ahead to candidates,
# three times faster than one that starts with a lookbehind.
_AFTER_FIRST = r"(?<![\w+.,/-].)(?<!\d[ .-].)"


def _tag(kind: str) -> str:
    return f"[{kind}]"


def _redact_group(match: re.Match, group: int | str, kind: str) -> str:
    """The match with only ``group`` replaced by the tag (labels such as ``Bearer`` stay)."""
    start, end = match.span(group)
    base = match.start()
    whole = match.group(0)
    return whole[: start - base] + _tag(kind) + whole[end - base:]


# --- tokens ---------------------------------------------------------------------------------------
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
_SCHEMES = r"(?:bearer|basic|token|digest|negotiate|apikey|api-key)"
_TOKEN_CHARS = r"[A-Za-z0-9\-._~+/=%:]"
_AUTH_HEADER = re.compile(
    rf"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:{_SCHEMES}\s+)?(?!{_SCHEMES}\b)(?P<cred>{_TOKEN_CHARS}{{8,}})"
)
_BEARER = re.compile(r"(?i)\bbearer\s+(?P<cred>[A-Za-z0-9\-._~+/]{8,}=*)")


def _redact_credential(match: re.Match) -> str:
    """Only the credential is replaced; a sentence's closing dot after it is kept."""
    whole = _redact_group(match, "cred", "TOKEN")
    cred = match.group("cred")
    return whole + cred[len(cred.rstrip(".")):]


def _check_auth(match: re.Match) -> str | None:
    return _redact_credential(match)


def _check_bearer(match: re.Match) -> str | None:
    cred = match.group("cred")
    # "the bearer instruments" is prose; a credential has a digit or is long.
    if len(cred) < 20 and not any(c.isdigit() for c in cred):
        return None
    return _redact_credential(match)


# --- access keys ----------------------------------------------------------------------------------
_ACCESS_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"(?:AKIA|ASIA)[A-Z0-9]{16}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"
    r"|github_pat_[A-Za-z0-9_]{22,255}"
    r"|xox[bpars]-[A-Za-z0-9-]{10,}"
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r")(?![A-Za-z0-9_-])"
)
_AWS_SECRET = re.compile(
    r"(?i)\b(?:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?"
    r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)


def _check_secret(match: re.Match) -> str | None:
    return _redact_group(match, "secret", "ACCESS_KEY")


# --- email ----------------------------------------------------------------------------------------
EMAIL = re.compile(r"[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-].)[A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")

# --- IBAN -----------------------------------------------------------------------------------------
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def _iban_pattern() -> re.Pattern:
    """Exactly the country's length, compact or in groups of four, so a following word is never taken."""
    by_length: dict[int, list[str]] = {}
    for country, length in IBAN_LENGTHS.items():
        by_length.setdefault(length, []).append(country)
    shapes = []
    for length, countries in sorted(by_length.items()):
        full, part = divmod(length - 4, 4)
        spaced = f"(?: [A-Z0-9]{{4}}){{{full}}}" + (f" [A-Z0-9]{{{part}}}" if part else "")
        shapes.append(f"(?<={'|'.join(countries)})\\d\\d(?:[A-Z0-9]{{{length - 4}}}|{spaced})")
    return re.compile(r"[A-Z]{2}(?<![A-Za-z0-9]..)(?:" + "|".join(shapes) + r")(?![A-Za-z0-9])")


def iban_is_valid(iban: str) -> bool:
    """ISO 13616: the country's length and the mod-97 check (``iban`` without spaces)."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _check_iban(match: re.Match) -> str | None:
    return _tag("IBAN") if iban_is_valid(match.group(0).replace(" ", "")) else None


_IBAN = _iban_pattern()


# --- payment cards --------------------------------------------------------------------------------
_CARD = re.compile(r"\d" + _AFTER_FIRST + r"(?:[ -]?\d){12,18}" + _NUM_RIGHT)
# (prefix range low, high, allowed lengths): issuer identification numbers of the major networks.
_IIN = (
    ("4", "4", (13, 16, 19)),                          # Visa
    ("51", "55", (16,)), ("2221", "2720", (16,)),      # Mastercard
    ("34", "34", (15,)), ("37", "37", (15,)),          # American Express
    ("6011", "6011", (16, 17, 18, 19)), ("644", "649", (16, 17, 18, 19)), ("65", "65", (16, 17, 18, 19)),  # Discover
    ("3528", "3589", (16, 17, 18, 19)),                # JCB
    ("300", "305", (14, 15, 16, 17, 18, 19)), ("36", "36", (14, 15, 16, 17, 18, 19)),
    ("38", "39", (16, 17, 18, 19)),                    # Diners Club
    ("62", "62", (16, 17, 18, 19)),                    # UnionPay
    ("50", "50", (12, 13, 14, 15, 16, 17, 18, 19)), ("56", "58", (12, 13, 14, 15, 16, 17, 18, 19)),
    ("6304", "6304", (16, 17, 18, 19)), ("6759", "6759", (16, 17, 18, 19)),
    ("6761", "6763", (16, 17, 18, 19)),                # Maestro
    ("2200", "2204", (16, 17, 18, 19)),                # Mir
)


def luhn_is_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a digit string."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_is_valid(digits: str) -> bool:
    """A known issuer prefix with one of its lengths, and the Luhn check."""
    for low, high, lengths in _IIN:
        if low <= digits[: len(low)] <= high and len(digits) in lengths:
            return luhn_is_valid(digits)
    return False


def _check_card(match: re.Match) -> str | None:
    whole = match.group(0)
    separators = {c for c in whole if not c.isdigit()}
    if len(separators) > 1:
        return None
    if separators:
        groups = whole.split(separators.pop())
        # Printed cards group as 4-4-4-4, 4-6-5, 4-6-4, 4-4-4-4-3: a first group of four, then 3..6.
        if len(groups[0]) != 4 or any(not 3 <= len(g) <= 6 for g in groups[1:]):
            return None
    return _tag("CARD") if card_is_valid(whole.replace(" ", "").replace("-", "")) else None


# --- US social security numbers -------------------------------------------------------------------
_SSN = re.compile(r"(?P<area>\d" + _AFTER_FIRST + r"\d\d)(?P<sep>[- ])(?P<group>\d{2})(?P=sep)(?P<serial>\d{4})" + _NUM_RIGHT)
_SSN_LABELLED = re.compile(r"(?i:\b(?:ssn|social security(?: number| no\.?)?|ss#)\s*(?:is|:|#|=)?\s*)"
                           r"(?P<bare>(?P<barea>\d{3})(?P<bgroup>\d{2})(?P<bserial>\d{4}))(?!\w)")


def ssn_is_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _check_ssn(match: re.Match) -> str | None:
    return _tag("SSN") if ssn_is_valid(match.group("area"), match.group("group"), match.group("serial")) else None


def _check_ssn_labelled(match: re.Match) -> str | None:
    if not ssn_is_valid(match.group("barea"), match.group("bgroup"), match.group("bserial")):
        return None
    return _redact_group(match, "bare", "SSN")


# --- IP addresses ---------------------------------------------------------------------------------
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3}|(?<![0-9A-Fa-f]:))(?:%[0-9A-Za-z]+)?(?!\w|:[0-9A-Fa-f:]|\.\d)"
)
_IPV4 = re.compile(r"\d(?<![\w.-].)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w-]|\.\d)")
_VERSION_MARKER = re.compile(r"(?i)\b(?:v|ver|version|release|build|firmware|fw|rev|revision)\.?\s*[:=]?\s*$")


def _ipv6_is_address(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate.split("%", 1)[0])
    except ValueError:
        return False
    # "::1" and "a::b" are too thin to call an address in prose; require two groups of content.
    return sum(1 for g in candidate.split("%", 1)[0].split(":") if g) >= 2


def _check_ipv6(match: re.Match) -> str | None:
    whole = match.group(0)
    if _ipv6_is_address(whole):
        return _tag("IP")
    # "2001:db8:::" is "2001:db8::" followed by a colon of the prose.
    if whole.endswith(":::") and _ipv6_is_address(whole[:-1]):
        return _tag("IP") + ":"
    return None


def _check_ipv4(match: re.Match) -> str | None:
    octets = match.group(0).split(".")
    if any(len(o) > 1 and o[0] == "0" or int(o) > 255 for o in octets):
        return None
    before = match.string[max(0, match.start() - 24): match.start()]
    return None if _VERSION_MARKER.search(before) else _tag("IP")


# --- phones ---------------------------------------------------------------------------------------
_PHONE_PLUS = re.compile(r"\+(?<![\w+].)(?<!\d[ .-].)[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,6}){1,6}" + _NUM_RIGHT)
_NATIONAL_FIRST = r"(?<![\w+.,/(-].)(?<!\d[ .-].)"  # _AFTER_FIRST, and not inside "(...)"
_PHONE_NATIONAL = re.compile(
    r"(?:1" + _NATIONAL_FIRST + r"[ .-]?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}"  # 1 (415) 555-0132
    r"|[2-9]" + _NATIONAL_FIRST + r"\d{2}[ .-][2-9]\d{2}[ .-]\d{4}"                                 # 415-555-0132
    r"|\(" + _NATIONAL_FIRST + r"\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{4}"                                # (020) 7946 0958
    r"|0" + _NATIONAL_FIRST + r"\d{1,4}[ .-]\d{3,4}[ .-]\d{4}"                                       # 020 7946 0958
    r"|0" + _NATIONAL_FIRST + r"[1-9](?P<fr>[ .-])\d{2}(?:(?P=fr)\d{2}){3}"                          # 06 12 34 56 78
    r")" + _NUM_RIGHT
)


def _check_phone_plus(match: re.Match) -> str | None:
    """E.164 allows 8 to 15 digits, country code included."""
    return _tag("PHONE") if 8 <= sum(c.isdigit() for c in match.group(0)) <= 15 else None


# Necessary conditions, one per detector family: a detector runs only on text its gate matches. No
# lookarounds, so that the bulk path can evaluate them in C++ (pyarrow's RE2) as well as in Python. Each is
# a detector's shape without its boundaries and validation, so that it rarely opens for text the detector
# would leave alone.
_GATES = {
    "jwt": r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.",
    "auth": r"(?i:authorization[\"']?\s*[:=])",
    "bearer": r"(?i:bearer\s+[A-Za-z0-9\-._~+/]{8})",
    "secret": r"(?i:secret_?(?:access_?)?key)",
    "key": r"(?:AKIA|ASIA)[A-Z0-9]{16}|AIza[0-9A-Za-z_-]{35}|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22}"
           r"|xox[bpars]-[A-Za-z0-9-]{10}|[sr]k_(?:live|test)_[A-Za-z0-9]{16}",
    "email": r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2}",
    "iban": r"[A-Z]{2}\d\d(?:[A-Z0-9]{11}| [A-Z0-9]{4} [A-Z0-9]{4})",
    # A card passes its check compact (13+ digits) or grouped 4, 3..6, 3..6, ...: a date never opens it.
    "card": r"\d{13}|\d{4}[ -]\d{3,6}[ -]\d{3}",
    "ssn": r"\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}",
    # The labelled form's prefix as the detector spells it: nine bare digits alone are order numbers.
    "ssn_label": r"(?i:(?:ssn|social security(?: number| no\.?)?|ss#)\s*(?:is|:|#|=)?\s*)\d{9}",
    # Compressed ("::" in a run of hex and colons that starts a word, unlike "std::vector") or 8 groups.
    "ipv6": r"(?:^|[^\w:.])[0-9A-Fa-f:]*::|(?:[0-9A-Fa-f]{1,4}:){6}",
    "ipv4": r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
    # +E.164; ddd-dddd ends every North-American, trunk and parenthesised form; "(02) 987..."; 06 12 34 56 78.
    "phone": r"\+\d(?:[ .()-]{0,2}\d){7}|\d{3}[ .-]\d{4}|\d\)[ .-]?\d{3}|0\d[ .-]\d\d[ .-]\d\d[ .-]\d\d[ .-]\d\d",
}
# The bulk pre-filter: one cheap RE2 pattern that every gate implies (a test checks that on the corpora),
# mostly literal triggers and short digit shapes. The union of the gates themselves is half again as slow
# over a column, because their counted repetitions grow RE2's automaton.
_TRIGGERS = (
    r"@|eyJ|(?i:authorization|bearer|secret|ssn|ss#|social security)|AKIA|ASIA|AIza|gh[pousr]_|github_pat_"
    r"|xox[bpars]-|[sr]k_(?:live|test)_|(?:^|[^\w:.])[0-9A-Fa-f:]*::|[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:"
    r"|[A-Z]{2}\d\d[A-Z0-9 ]{4}|\d{13}|\d{4}[ -]\d{3}|\d{3}[ -]\d\d[ -]\d{4}|\d{3}[ .-]\d{4}"
    r"|\d\.\d{1,3}\.\d{1,3}\.\d|\+\d|\d\)[ .-]?\d|0\d[ .-]\d\d[ .-]\d\d[ .-]\d\d[ .-]\d\d"
)
_GATE_BITS = {name: 1 << position for position, name in enumerate(_GATES)}
_ALWAYS = 0  # extra patterns: no gate
_GATE_PATTERNS = tuple((_GATE_BITS[name], re.compile(pattern)) for name, pattern in _GATES.items())


_SPACE = r"\t\n\x0b\f\r\x1c-\x1f\x85\p{Z}"
# Python's meaning of a class escape in RE2 syntax, outside and inside a character class (None: no spelling).
_UNICODE_CLASSES = {"d": (r"\p{Nd}", r"\p{Nd}"), "s": (f"[{_SPACE}]", _SPACE), "w": (r"[\p{L}\p{N}_]", r"\p{L}\p{N}_"),
                    "D": (r"[^\p{Nd}]", None), "S": (f"[^{_SPACE}]", None), "W": (r"[^\p{L}\p{N}_]", None),
                    "b": ("", None), "B": ("", None)}


def _re2(pattern: str) -> str:
    """A pattern for RE2 that matches wherever Python's ``pattern`` does (a necessary condition).

    RE2's ``\\d``, ``\\s`` and ``\\w`` are ASCII where Python's are Unicode, so they are spelled out; word
    boundaries are dropped, which only widens the pattern. Raises ``ValueError`` where no such spelling exists.
    """
    out, in_class, i = [], False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escape = pattern[i + 1]
            spelled = _UNICODE_CLASSES.get(escape)
            if spelled is None:
                out.append(pattern[i:i + 2])
            elif spelled[in_class] is None:
                raise ValueError(f"\\{escape} inside a character class has no RE2 spelling")
            else:
                out.append(spelled[in_class])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(char)
            # "[]...]" and "[^]...]": a leading "]" is a member, not the end of the class.
            for lead in ("^", "]"):
                if pattern.startswith(lead, i + 1):
                    i += 1
                    out.append(lead)
        elif char == "]" and in_class:
            in_class = False
            out.append(char)
        else:
            out.append(char)
        i += 1
    return "".join(out)


_RE2_GATES = {name: _re2(pattern) for name, pattern in _GATES.items()}
_RE2_TRIGGERS = _re2(_TRIGGERS)


def _gate_bits(text: str) -> int:
    bits = 0
    for bit, pattern in _GATE_PATTERNS:
        if pattern.search(text):
            bits |= bit
    return bits


def _replacer(check: _Check | None, kind: str) -> Callable[[re.Match], str] | str:
    """What ``re.sub`` needs: the tag, or the check's replacement with the match kept when it fails."""
    if check is None:
        return _tag(kind)
    return lambda match: check(match) or match.group(0)


# (kind, gate, pattern, replacement). Order matters: tokens and keys first (they contain digit runs),
# then emails (dots and digits), IBANs before cards (an IBAN holds a long digit run), SSNs and IPs
# before phones.
_Detector = tuple[str, int, re.Pattern, "Callable[[re.Match], str] | str"]
_DETECTORS: tuple[_Detector, ...] = tuple((kind, _GATE_BITS[gate], pattern, _replacer(check, kind)) for kind, gate, pattern, check in (
    ("TOKEN", "jwt", _JWT, None),
    ("TOKEN", "auth", _AUTH_HEADER, _check_auth),
    ("TOKEN", "bearer", _BEARER, _check_bearer),
    ("ACCESS_KEY", "secret", _AWS_SECRET, _check_secret),
    ("ACCESS_KEY", "key", _ACCESS_KEY, None),
    ("EMAIL", "email", EMAIL, None),
    ("IBAN", "iban", _IBAN, _check_iban),
    ("CARD", "card", _CARD, _check_card),
    ("SSN", "ssn", _SSN, _check_ssn),
    ("SSN", "ssn_label", _SSN_LABELLED, _check_ssn_labelled),
    ("IP", "ipv6", _IPV6, _check_ipv6),
    ("IP", "ipv4", _IPV4, _check_ipv4),
    ("PHONE", "phone", _PHONE_PLUS, _check_phone_plus),
    ("PHONE", "phone", _PHONE_NATIONAL, None),
))

@dataclass
class ScrubbedColumn:
    """A scrubbed column: the texts (an Arrow string array, clean rows shared with the input's buffers),
    the replacements per row, and the replacements per kind in all."""

    texts: pa.Array
    redactions: np.ndarray
    kinds: dict[str, int]


class Scrubber:
    """Validated PII detectors plus ``extra_patterns`` (name -> regex, tagged ``[NAME]``).

    Thread-safe: it holds only compiled patterns, so one instance can serve an HTTP server's threads.
    """

    def __init__(self, extra_patterns: Mapping[str, str] | None = None) -> None:
        extras: list[_Detector] = []
        for name, pattern in (extra_patterns or {}).items():
            kind = name.upper()
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", kind):
                raise ValueError(f"extra PII pattern name {name!r}: use letters, digits and '_' (it becomes the tag [{kind}])")
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ValueError(f"extra PII pattern {name!r}: {pattern!r} is not a valid regex ({error})") from error
            if compiled.search(f"[{kind}]") or compiled.search(""):
                raise ValueError(f"extra PII pattern {name!r}: {pattern!r} matches its own tag or the empty "
                                 "string, so scrubbing would never settle; make it more specific")
            extras.append((kind, _ALWAYS, compiled, _tag(kind)))
        self.extra_patterns = dict(extra_patterns or {})
        self._detectors = tuple(extras) + _DETECTORS
        try:
            self._trigger: str | None = "|".join([_RE2_TRIGGERS, *(_re2(p) for p in self.extra_patterns.values())])
        except ValueError:
            self._trigger = None  # an extra pattern RE2 cannot read the same way: Python's regex instead
        self._trigger_compiles: bool | None = None  # checked on first use: pyarrow loads only for bulk work
        self._python_gates = tuple(re.compile(p) for p in _GATES.values())

    def scrub(self, text: str) -> Scrubbed:
        """Replace every validated PII value in ``text`` by its tag; count the replacements per kind."""
        return self._scrub_gated(text, _gate_bits(text))

    def _scrub_gated(self, text: str, gates: int) -> Scrubbed:
        """``scrub`` with the gates already evaluated (``gates``: the bits of the open ones)."""
        kinds: dict[str, int] = {}
        for kind, gate, pattern, replacement in self._detectors:
            if gate and not gates & gate:
                continue
            scrubbed = pattern.sub(replacement, text)
            if scrubbed != text:
                # Every replacement adds exactly one tag; tags already in the text are not counted.
                tag = _tag(kind)
                kinds[kind] = kinds.get(kind, 0) + scrubbed.count(tag) - text.count(tag)
                text = scrubbed
        return Scrubbed(text, sum(kinds.values()), kinds)

    def candidates(self, texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> list[int]:
        """Positions of the texts that could hold PII (the bulk pre-filter); all others are clean."""
        import numpy as np

        return np.flatnonzero(self._flag(_as_arrow(texts))).tolist()

    def _flag(self, column: pa.Array) -> np.ndarray:
        """The pre-filter over a whole column: a boolean per row, True where some detector could match."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._trigger is not None and self._trigger_compiles is None:
            try:
                pc.match_substring_regex(pa.array([""]), self._trigger)
                self._trigger_compiles = True
            except pa.ArrowInvalid:
                self._trigger_compiles = False  # lookarounds or backreferences in an extra pattern
        if self._trigger is not None and self._trigger_compiles:
            return _parallel_match(column, self._trigger)
        gates, extras = self._python_gates, [d[2] for d in self._detectors if not d[1]]
        return np.array([any(p.search(t) for p in gates) or any(p.search(t) for p in extras)
                         for t in column.to_pylist()], dtype=bool)

    def _scrub_flagged(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray, list[Scrubbed]]:
        """Scrub the rows the pre-filter flags, each distinct text once: (positions of the flagged rows,
        for each the index of its distinct text, the result for each distinct text)."""
        import numpy as np
        import pyarrow.compute as pc

        hits = np.flatnonzero(self._flag(column))
        if not len(hits):
            return hits, hits, []
        flagged = column.take(hits)
        # Feedback repeats itself (retries, templated prompts): scrub each distinct flagged text once.
        distinct = pc.unique(flagged)
        which = pc.index_in(flagged, value_set=distinct).to_numpy(zero_copy_only=False)
        # The gates of the distinct texts in C++ too: Python then runs only the detectors they open.
        gates = np.zeros(len(distinct), dtype=np.int64)
        for name, pattern in _RE2_GATES.items():
            opened = pc.match_substring_regex(distinct, pattern).to_numpy(zero_copy_only=False)
            gates |= opened.astype(np.int64) * _GATE_BITS[name]
        scrub = self._scrub_gated
        return hits, which, [scrub(text, bits) for text, bits in zip(distinct.to_pylist(), gates.tolist(), strict=True)]

    def scrub_column(self, texts: Sequence[str] | pa.Array | pa.ChunkedArray | pd.Series) -> ScrubbedColumn:
        """The bulk path for ingestion: what ``scrub`` gives for each text, with no Python object per clean row.

        One RE2 pass over the column flags the rows that could hold PII; only their distinct texts reach the
        validating detectors, and only the changed rows are replaced in the returned Arrow array.
        """
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        column = _as_arrow(texts)
        redactions = np.zeros(len(column), dtype=np.int64)
        hits, which, results = self._scrub_flagged(column)
        if not results:
            return ScrubbedColumn(column, redactions, {})
        per_text = np.fromiter((r.redactions for r in results), dtype=np.int64, count=len(results))
        redactions[hits] = per_text[which]
        kinds: dict[str, int] = {}
        for result, rows in zip(results, np.bincount(which, minlength=len(results)).tolist(), strict=True):
            for kind, count in result.kinds.items():
                kinds[kind] = kinds.get(kind, 0) + count * rows
        changed = per_text[which] > 0
        if changed.any():
            replaced = np.zeros(len(column), dtype=bool)
            replaced[hits[changed]] = True
            new_texts = pa.array([r.text for r in results], type=column.type).take(which[changed])
            column = pc.replace_with_mask(column, pa.array(replaced), new_texts)
        return ScrubbedColumn(column, redactions, kinds)

    def scrub_many(self, texts: Sequence[str]) -> list[Scrubbed]:
        """``scrub`` for each of ``texts``, on the bulk path (``scrub_column`` is faster still: no object per row)."""
        out = list(texts)
        if not out:
            return []
        hits, which, results = self._scrub_flagged(_as_arrow(out))
        scrubbed = [Scrubbed(t, 0, {}) for t in out]
        for position, index in zip(hits.tolist(), which.tolist(), strict=True):
            result = results[index]
            scrubbed[position] = Scrubbed(result.text, result.redactions, dict(result.kinds))
        return scrubbed


# Rows per slice when the pre-filter runs on several cores: pyarrow's kernels release the GIL, so threads
# suffice, and below this a thread costs more than it saves.
_SLICE_ROWS = 131_072


def _parallel_match(column: pa.Array, pattern: str) -> np.ndarray:
    """``match_substring_regex(column, pattern)`` as a boolean numpy array, slices on several cores."""
    import numpy as np
    import pyarrow.compute as pc

    def match(start: int) -> np.ndarray:
        piece = column.slice(start, _SLICE_ROWS)
        return pc.match_substring_regex(piece, pattern).to_numpy(zero_copy_only=False)

    starts = range(0, len(column), _SLICE_ROWS)
    workers = min(len(starts), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if workers <= 1:
        return pc.match_substring_regex(column, pattern).to_numpy(zero_copy_only=False)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(match, starts)))


def _as_arrow(texts: Sequence[str] | pa.Array | pa.ChunkedArray | pd.Series) -> pa.Array:
    """``texts`` as one Arrow string array, refusing missing values with the position of the first."""
    import numpy as np
    import pyarrow as pa

    try:
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        if isinstance(texts, pa.Array):
            # string and large_string are read as they are: a cast would copy the column.
            column = texts if texts.type in (pa.string(), pa.large_string()) else texts.cast(pa.large_string())
        else:
            column = pa.array(texts, type=pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        values = list(texts)
        bad = next((i for i, t in enumerate(values) if not isinstance(t, str)), None)
        if bad is None:
            raise
        raise TypeError(f"scrub: texts[{bad}] is {type(values[bad]).__name__}, expected str; "
                        "fill or drop missing texts before scrubbing") from error
    if column.null_count:
        bad = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise TypeError(f"scrub: texts[{bad}] is None, expected str; fill or drop missing texts before scrubbing")
    return column


_DEFAULT = Scrubber()


def sanitize_pii(text: str) -> Scrubbed:
    """Scrub ``text`` with the default detectors (no extra patterns)."""
    return _DEFAULT.scrub(text)


def pseudonymize_user(user_id: str, key: bytes) -> str:
    """A stable pseudonym for ``user_id`` under ``key``: ``"u_"`` + 32 hex chars of HMAC-SHA256.

    Without the key the id cannot be recovered or confirmed by hashing guesses; with the same key the
    same user maps to the same pseudonym, so per-user analysis still works.
    """
    if not key:
        raise ValueError("pseudonymize_user: the key is empty; use pii_key_from_env() to read a real secret")
    return "u_" + hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def pii_key_from_env(var: str = "CRUCIBLE_PII_KEY") -> bytes:
    """The user-pseudonymization key from the environment variable ``var`` (its UTF-8 bytes)."""
    value = os.environ.get(var, "")
    if not value.strip():
        raise RuntimeError(f"{var} is not set: export {var} to a secret "
                           f"(e.g. `export {var}=$(openssl rand -hex 32)`) so user ids can be pseudonymized")
    return value.encode("utf-8")
