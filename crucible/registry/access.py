"""Who may change the registry: principals with roles, salted-hash API tokens, and the rule for each action.

A token is ``crt_<token id>.<secret>``: the id finds the principal, and the secret is checked against
a salted scrypt hash with a constant-time compare. The token itself is never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from crucible.lake import DeltaLake
from schemas import PRINCIPALS
from schemas.registry import ROLES

TOKEN_PREFIX = "crt_"
# scrypt cost: ~16 MiB and tens of milliseconds per check, paid once per process that authenticates.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}

# The roles that may perform each action; admin may do everything.
ACTION_ROLES: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "register": frozenset({"trainer", "admin"}),
    "add_edge": frozenset({"trainer", "admin"}),
    "transition": frozenset({"trainer", "admin"}),  # between experiment, staging and archived
    "set_alias": frozenset({"trainer", "admin"}),
    "delete_alias": frozenset({"trainer", "admin"}),
    "delete": frozenset({"trainer", "admin"}),  # a version that is not in production
    "promote": frozenset({"approver", "admin"}),  # into production
    "leave_production": frozenset({"admin"}),  # archive or demote the production version
    "delete_production": frozenset({"admin"}),
    "create_principal": frozenset({"admin"}),
}


class AccessDenied(PermissionError):
    """A principal lacks the role an action needs (the refusal is also in the audit log)."""

    def __init__(self, principal: str, action: str, needed: Iterable[str], has: Iterable[str]):
        self.principal, self.action = principal, action
        self.needed = [role for role in ROLES if role in set(needed)]
        self.has = [role for role in ROLES if role in set(has)]
        self.reason = f"needs role {' or '.join(self.needed)}; has {', '.join(self.has) or 'no role'}"
        super().__init__(f"principal {principal!r} may not {action}: {self.reason}")


class AuthenticationError(PermissionError):
    """A token that is malformed, unknown or wrong, or an unset token variable."""


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]

    def may(self, action: str) -> bool:
        return bool(self.roles & ACTION_ROLES[action])


def check_roles(roles: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(roles)
    unknown = sorted(chosen - set(ROLES))
    if unknown or not chosen:
        raise ValueError(f"roles {sorted(chosen)}: {'unknown ' + str(unknown) if unknown else 'none given'}; "
                         f"choose from {', '.join(ROLES)}")
    return chosen


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$<salt hex>$<hash hex>`` of ``secret`` with a fresh random salt."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT, dklen=32)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


def principals(lake: DeltaLake) -> pd.DataFrame:
    return lake.read(PRINCIPALS)


def create_principal(lake: DeltaLake, name: str, roles: Iterable[str], by: Principal | None = None) -> str:
    """Create principal ``name`` with ``roles`` and return its token (shown once, never stored).

    With no principal in the lake yet, the first one is created without ``by`` and must be an admin
    (the bootstrap); after that ``by`` must be an admin. The check and the insert are one
    read-modify-write, so two bootstraps at once create one admin.
    """
    from crucible.registry.audit import record

    chosen = check_roles(roles)
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = {"name": name, "roles": json.dumps(sorted(chosen)), "token_id": token_id,
           "token_hash": hash_secret(secret), "created_by": by.name if by else name,
           "created_at": pd.Timestamp.now(tz="UTC")}
    refused: list[AccessDenied] = []

    def insert(existing: pd.DataFrame) -> pd.DataFrame:
        refused.clear()
        if name in set(existing["name"]):
            raise ValueError(f"principal {name!r} already exists; pick another name")
        if existing.empty and by is None:
            if "admin" not in chosen:
                raise ValueError(f"the first principal must have the admin role (asked for {sorted(chosen)})")
            return pd.DataFrame([row])
        actor = by or Principal("anonymous", frozenset())
        if not actor.may("create_principal"):
            refused.append(AccessDenied(actor.name, f"create principal {name!r}", ACTION_ROLES["create_principal"],
                                        actor.roles))
            return pd.DataFrame(columns=list(row))
        return pd.DataFrame([row])

    lake.read_modify_write(PRINCIPALS, None, insert)
    actor_name = by.name if by else name
    if refused:
        record(lake, actor_name, "create_principal", None, None, {"name": name, "roles": sorted(chosen)},
               allowed=False, reason=refused[0].reason)
        raise refused[0]
    record(lake, actor_name, "create_principal", None, None, {"name": name, "roles": sorted(chosen)})
    return f"{TOKEN_PREFIX}{token_id}.{secret}"


def authenticate(lake: DeltaLake, token: str) -> Principal:
    """The principal a token belongs to; :class:`AuthenticationError` when it belongs to none."""
    body = token.strip().removeprefix(TOKEN_PREFIX)
    token_id, _, secret = body.partition(".")
    if not token.strip().startswith(TOKEN_PREFIX) or not token_id or not secret:
        raise AuthenticationError(f"registry token is malformed: expected '{TOKEN_PREFIX}<id>.<secret>' as "
                                  f"returned by create_principal")
    rows = lake.read(PRINCIPALS, where={"token_id": token_id})
    if rows.empty or not verify_secret(secret, rows.iloc[0]["token_hash"]):
        raise AuthenticationError(f"registry token {TOKEN_PREFIX}{token_id}.… is unknown or wrong: ask an "
                                  f"admin for a new one (create_principal)")
    row = rows.iloc[0]
    return Principal(str(row["name"]), frozenset(json.loads(row["roles"])))


def principal_from_env(lake: DeltaLake, token_env: str = "CRUCIBLE_REGISTRY_TOKEN") -> Principal:
    """The principal whose token is in environment variable ``token_env`` (a service, e.g. Dagster runs)."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise AuthenticationError(f"environment variable {token_env} is not set: put a registry token in it "
                                  f"(create one with create_principal)")
    try:
        return authenticate(lake, token)
    except AuthenticationError as error:
        raise AuthenticationError(f"environment variable {token_env}: {error}") from None
