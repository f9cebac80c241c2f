"""A seeded generator of tickets, chats and log lines with planted PII next to hard negatives, spans recorded."""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field

KINDS = ("EMAIL", "PHONE", "SSN", "CARD", "IBAN", "IP", "ACCESS_KEY", "TOKEN")


@dataclass(frozen=True)
class Planted:
    kind: str
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class Line:
    text: str
    planted: list[Planted] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- values
_FIRST = ("jane", "li", "omar", "sofia", "ken", "amara", "piotr", "lucia", "noah", "mei", "ravi", "zoe")
_LAST = ("doe", "wei", "haddad", "rossi", "tanaka", "okafor", "nowak", "garcia", "smith", "chen", "iyer")
_DOMAINS = ("example.com", "mail.example.org", "corp.example.co.uk", "example.net", "uni-example.edu", "shop.example.io")


def email(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = rng.choice((f"{first}.{last}", f"{first}_{last}", f"{first}{rng.randrange(100)}", f"{first[0]}.{last}+support",
                        f"{last}.{first}-{rng.randrange(10)}"))
    return f"{local}@{rng.choice(_DOMAINS)}"


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def phone(rng: random.Random) -> str:
    area = f"{rng.randrange(2, 10)}{_digits(rng, 2)}"
    exchange = f"{rng.randrange(2, 10)}{_digits(rng, 2)}"
    line = _digits(rng, 4)
    form = rng.randrange(14)
    if form == 0:
        return f"({area}) {exchange}-{line}"
    if form == 1:
        return f"{area}-{exchange}-{line}"
    if form == 2:
        return f"{area}.{exchange}.{line}"
    if form == 3:
        return f"+1 {area} {exchange} {line}"
    if form == 4:
        return f"1-{area}-{exchange}-{line}"
    if form == 5:
        return f"+1{area}{exchange}{line}"
    if form == 6:
        return f"+44 20 {_digits(rng, 4)} {_digits(rng, 4)}"
    if form == 7:
        return f"(020) {_digits(rng, 4)} {_digits(rng, 4)}"
    if form == 8:
        return f"0{rng.randrange(1, 10)}{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 4)}"
    if form == 9:
        return f"+33 {rng.randrange(1, 10)} " + " ".join(_digits(rng, 2) for _ in range(4))
    if form == 10:
        return f"0{rng.randrange(1, 10)}." + ".".join(_digits(rng, 2) for _ in range(4))
    if form == 11:
        return f"+49 30 {_digits(rng, 7)}"
    if form == 12:
        return f"+81 3-{_digits(rng, 4)}-{_digits(rng, 4)}"
    return f"+{rng.choice(('44', '49', '61', '91', '351'))}{rng.randrange(1, 10)}{_digits(rng, 8)}"


def _ssn_parts(rng: random.Random) -> tuple[str, str, str]:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}", f"{rng.randrange(1, 100):02d}", f"{rng.randrange(1, 10_000):04d}"


def ssn(rng: random.Random) -> str:
    area, group, serial = _ssn_parts(rng)
    return rng.choice((f"{area}-{group}-{serial}", f"{area}-{group}-{serial}", f"{area} {group} {serial}"))


def luhn_check_digit(payload: str) -> str:
    total = 0
    for position, char in enumerate(reversed(payload)):
        value = int(char)
        if position % 2 == 0:  # these positions are doubled once the check digit is appended
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str((10 - total % 10) % 10)


_CARD_BRANDS = (("4", 16), ("4", 13), ("4", 19), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16), ("34", 15),
                ("37", 15), ("6011", 16), ("65", 16), ("3528", 16), ("36", 14), ("62", 16), ("62", 19))


def _card_digits(rng: random.Random, valid: bool) -> str:
    prefix, length = rng.choice(_CARD_BRANDS)
    payload = prefix + _digits(rng, length - len(prefix) - 1)
    check = luhn_check_digit(payload)
    if not valid:
        check = str((int(check) + rng.randrange(1, 10)) % 10)
    return payload + check


def _group_card(rng: random.Random, digits: str) -> str:
    sep = rng.choice(("", " ", "-", " "))
    if not sep:
        return digits
    if len(digits) == 15:
        sizes = (4, 6, 5)
    elif len(digits) == 14:
        sizes = (4, 6, 4)
    elif len(digits) == 13:
        sizes = (4, 3, 3, 3)
    elif len(digits) == 19:
        sizes = (4, 4, 4, 4, 3)
    else:
        sizes = (4, 4, 4, 4)
    parts, at = [], 0
    for size in sizes:
        parts.append(digits[at:at + size])
        at += size
    return sep.join(parts)


def card(rng: random.Random) -> str:
    return _group_card(rng, _card_digits(rng, valid=True))


# (country, BBAN layout): 'n' digit, 'a' upper letter, 'c' upper alphanumeric.
_IBAN_LAYOUTS = (("DE", "n" * 18), ("GB", "aaaa" + "n" * 14), ("FR", "n" * 10 + "c" * 11 + "nn"), ("NL", "aaaa" + "n" * 10),
                 ("BE", "n" * 12), ("CH", "n" * 5 + "c" * 12), ("ES", "n" * 20), ("IT", "a" + "n" * 10 + "c" * 12),
                 ("NO", "n" * 11), ("PL", "n" * 24), ("SA", "nn" + "c" * 18), ("AT", "n" * 16), ("IE", "aaaa" + "n" * 14),
                 ("SE", "n" * 20), ("PT", "n" * 21), ("MT", "aaaa" + "n" * 5 + "c" * 18))


def _iban_check(country: str, bban: str) -> str:
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{98 - number % 97:02d}"


def _iban_compact(rng: random.Random, valid: bool) -> str:
    country, layout = rng.choice(_IBAN_LAYOUTS)
    pools = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}
    bban = "".join(rng.choice(pools[k]) for k in layout)
    check = _iban_check(country, bban)
    if not valid:  # any other pair of check digits fails mod-97
        check = rng.choice([f"{c:02d}" for c in range(2, 99) if f"{c:02d}" != check])
    return country + check + bban


def _space_iban(rng: random.Random, compact: str) -> str:
    if rng.random() < 0.4:
        return compact
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def iban(rng: random.Random) -> str:
    return _space_iban(rng, _iban_compact(rng, valid=True))


def ip(rng: random.Random) -> str:
    if rng.random() < 0.55:
        return ".".join(str(rng.choice((rng.randrange(256), rng.randrange(1, 224), 10, 192, 172, 255, 0)))
                        for _ in range(4)).replace("0.0.0.0", "10.0.0.1")
    groups = [rng.randrange(0x10000) for _ in range(8)]
    if rng.random() < 0.6:  # a run of zeros, so the compressed form uses "::"
        start = rng.randrange(1, 6)
        for i in range(start, start + rng.randrange(2, 4)):
            groups[i] = 0
    address = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
    form = rng.randrange(3)
    if form == 0:
        return address.compressed
    if form == 1:
        return address.exploded
    return f"::ffff:{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _alnum(rng: random.Random, n: int, pool: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(pool) for _ in range(n))


def access_key(rng: random.Random) -> str:
    form = rng.randrange(6)
    if form == 0:
        return rng.choice(("AKIA", "ASIA")) + _alnum(rng, 16, string.ascii_uppercase + string.digits)
    if form == 1:
        return "AIza" + _alnum(rng, 35, string.ascii_letters + string.digits + "_-")
    if form == 2:
        return "ghp_" + _alnum(rng, 36)
    if form == 3:
        return "github_pat_" + _alnum(rng, 22) + "_" + _alnum(rng, 59)
    if form == 4:
        return f"xox{rng.choice('bpars')}-{_digits(rng, 11)}-{_digits(rng, 12)}-{_alnum(rng, 24)}"
    return "sk_live_" + _alnum(rng, 24)


def aws_secret(rng: random.Random) -> str:
    return _alnum(rng, 40, string.ascii_letters + string.digits + "/+")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(rng: random.Random) -> str:
    if rng.random() < 0.5:
        header = _b64url(json.dumps({"alg": rng.choice(("HS256", "RS256")), "typ": "JWT"}).encode())
        payload = _b64url(json.dumps({"sub": str(rng.randrange(10**9)), "iat": 1_700_000_000 + rng.randrange(10**7)}).encode())
        return f"{header}.{payload}.{_b64url(rng.randbytes(32))}"
    return _alnum(rng, rng.randrange(24, 48), string.ascii_letters + string.digits + "-._~")


# ------------------------------------------------------------------------------------ hard negatives
def _uuid(rng: random.Random) -> str:
    h = "".join(rng.choice("0123456789abcdef") for _ in range(32))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _isbn13(rng: random.Random) -> str:
    body = "978" + _digits(rng, 9)
    check = (10 - sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body)) % 10) % 10
    return f"{body[:3]}-{body[3]}-{body[4:6]}-{body[6:12]}-{check}"


def _bad_ssn(rng: random.Random) -> str:
    area, group, serial = _ssn_parts(rng)
    broken = rng.randrange(5)
    area = ("000", "666", f"9{_digits(rng, 2)}", area, area)[broken]
    group = "00" if broken == 3 else group
    serial = "0000" if broken == 4 else serial
    return f"{area}-{group}-{serial}"


def _bad_dotted_quad(rng: random.Random) -> str:
    form = rng.randrange(4)
    if form == 0:
        return f"{rng.randrange(256, 1000)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
    if form == 1:
        return f"{rng.randrange(1, 256)}.{rng.randrange(256)}.{rng.randrange(256)}"
    if form == 2:
        return f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256, 999)}"
    return f"0{rng.randrange(1, 10)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"


HARD_NEGATIVES: dict[str, Callable[[random.Random], str]] = {
    "luhn_failing": lambda rng: _group_card(rng, _card_digits(rng, valid=False)),
    "order": lambda rng: f"order #{rng.randrange(10**7, 10**8)}",
    "invoice": lambda rng: f"INV-{rng.randrange(2019, 2026)}-{rng.randrange(10**6):06d}",
    "ticket": lambda rng: f"ticket {rng.randrange(10**6, 10**7)}",
    "date_iso": lambda rng: f"{rng.randrange(2019, 2026)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
    "date_eu": lambda rng: f"{rng.randrange(1, 29):02d}/{rng.randrange(1, 13):02d}/{rng.randrange(2019, 2026)}",
    "date_dotted": lambda rng: f"{rng.randrange(1, 13):02d}.{rng.randrange(1, 29):02d}.{rng.randrange(2019, 2026)}",
    "time": lambda rng: f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}",
    "price": lambda rng: f"${rng.randrange(1, 10)},{rng.randrange(1000):03d}.{rng.randrange(100):02d}",
    "version": lambda rng: rng.choice((f"v{rng.randrange(5)}.{rng.randrange(30)}.{rng.randrange(10)}",
                                        f"version {rng.randrange(1, 20)}.{rng.randrange(10)}.{rng.randrange(10)}.{rng.randrange(100)}",
                                        f"v{rng.randrange(1, 20)}.{rng.randrange(10)}.{rng.randrange(10)}.{rng.randrange(100)}")),
    "isbn": _isbn13,
    "bad_ssn": _bad_ssn,
    "bad_iban": lambda rng: _space_iban(rng, _iban_compact(rng, valid=False)),
    "uuid": _uuid,
    "sha": lambda rng: "".join(rng.choice("0123456789abcdef") for _ in range(rng.choice((7, 12, 40, 64)))),
    "zip": lambda rng: rng.choice((f"{rng.randrange(10**4, 10**5)}", f"{rng.randrange(10**4, 10**5)}-{rng.randrange(10**4):04d}")),
    "bad_dotted_quad": _bad_dotted_quad,
}


# ------------------------------------------------------------------------------------------ lines
def planted_value(rng: random.Random, kind: str) -> tuple[str, str, str]:
    """(a label before the value, the value, the kind); the label is not PII but some kinds need one."""
    if kind == "EMAIL":
        return rng.choice(("mail me at ", "contact: ", "from <", "cc ")), email(rng), kind
    if kind == "PHONE":
        return rng.choice(("call me on ", "phone: ", "my number is ", "tel ")), phone(rng), kind
    if kind == "SSN":
        if rng.random() < 0.15:
            return rng.choice(("SSN: ", "ssn ", "social security number ")), "".join(_ssn_parts(rng)), kind
        return rng.choice(("SSN ", "my social is ", "ssn: ", "tax id ")), ssn(rng), kind
    if kind == "CARD":
        return rng.choice(("card ", "paid with ", "cc number: ", "the card ")), card(rng), kind
    if kind == "IBAN":
        return rng.choice(("IBAN ", "refund to ", "account: ", "iban=")), iban(rng), kind
    if kind == "IP":
        return rng.choice(("from ", "client_ip=", "host ", "remote addr ")), ip(rng), kind
    if kind == "ACCESS_KEY":
        if rng.random() < 0.2:
            return rng.choice(("aws_secret_access_key = ", "AWS_SECRET_ACCESS_KEY=", '"aws_secret_access_key": "')), aws_secret(rng), kind
        return rng.choice(("key ", "api_key=", "token: ", "using ")), access_key(rng), kind
    value = token(rng)
    if value.startswith("eyJ") and rng.random() < 0.5:
        return rng.choice(("jwt=", "session ", "id_token: ")), value, kind
    return rng.choice(("Authorization: Bearer ", "authorization: bearer ", "Authorization: Token ", "-H 'Authorization: Bearer ")), value, kind


_TICKET = ("Ticket {neg}: customer says {pii} was charged twice, see {neg}.",
           "Hi support, {pii} — my order {neg} never arrived ({neg}).",
           "Refund request {neg}. Details: {pii}. Thanks!")
_CHAT = ("user: can you update my profile? {pii} please, it changed on {neg}",
         "assistant: I have noted {pii}. Your reference is {neg}.",
         "user: why was {neg} rejected? I sent {pii} yesterday")
_LOG = ("2024-03-15 14:35:09 INFO request_id={neg} {pii} status=200 took 35ms",
        "[{neg}] WARN auth failed for {pii}; retry in 5s",
        "ERROR {neg} payment declined {pii} code=51")


def make_line(rng: random.Random, kinds: list[str]) -> Line:
    """One ticket, chat turn or log line with a planted value of each of ``kinds`` and hard negatives."""
    template = rng.choice(rng.choice((_TICKET, _CHAT, _LOG)))
    pieces: list[tuple[str, str | None]] = []  # (text, kind of the planted value or None)
    pii_slots = iter(kinds)
    rest = template
    while rest:
        at = min((i for i in (rest.find("{pii}"), rest.find("{neg}")) if i >= 0), default=-1)
        if at < 0:
            pieces.append((rest, None))
            break
        pieces.append((rest[:at], None))
        slot, rest = rest[at:at + 5], rest[at + 5:]
        if slot == "{neg}":
            pieces.append((HARD_NEGATIVES[rng.choice(list(HARD_NEGATIVES))](rng), None))
        else:
            chunk = []
            for kind in pii_slots:
                label, value, _ = planted_value(rng, kind)
                chunk.append((label, value, kind))
            for i, (label, value, kind) in enumerate(chunk):
                pieces.append(((", and " if i else "") + label, None))
                pieces.append((value, kind))
                if label.endswith("<"):
                    pieces.append((">", None))
                elif label.endswith("'") or label.endswith('"'):
                    pieces.append((label[-1], None))
    text, planted = "", []
    for piece, kind in pieces:
        if kind is not None:
            planted.append(Planted(kind, piece, len(text), len(text) + len(piece)))
        text += piece
    return Line(text, planted)


def make_clean_line(rng: random.Random) -> Line:
    """A line of the same shapes holding only hard negatives."""
    template = rng.choice(rng.choice((_TICKET, _CHAT, _LOG))).replace("{pii}", "{neg}")
    while "{neg}" in template:
        template = template.replace("{neg}", HARD_NEGATIVES[rng.choice(list(HARD_NEGATIVES))](rng), 1)
    return Line(template)


def corpus(seed: int, lines: int, kinds: tuple[str, ...] = KINDS, max_per_line: int = 3) -> list[Line]:
    """``lines`` lines, each with 1..max_per_line planted values of ``kinds``; deterministic for ``seed``."""
    rng = random.Random(seed)
    return [make_line(rng, [rng.choice(kinds) for _ in range(rng.randrange(1, max_per_line + 1))]) for _ in range(lines)]


def clean_corpus(seed: int, lines: int) -> list[Line]:
    rng = random.Random(seed)
    return [make_clean_line(rng) for _ in range(lines)]
