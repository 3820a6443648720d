"""API keys with roles, for the REST API.

A key is shown once, when it is created; the ops store keeps only its SHA-256 (a key is 32 random
bytes, so a plain hash cannot be reversed or guessed) and a short public `key_id` that the lineage
log records as who did what. Roles:

    viewer    reads everything (runs, lineage, forecasts) and calls the stateless endpoints
    approver  a viewer who also approves or rejects creatives
    operator  a viewer who also starts runs, pushes payloads and rebalances
    admin     everything, and manages keys
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from flashcast.errors import ConfigError
from flashcast.lineage import LineageLog, utc_now
from flashcast.store import OpsStore

Role = Literal["viewer", "approver", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "approver", "operator", "admin")
Action = Literal["read", "approve", "operate", "admin"]
GRANTS: dict[Role, frozenset[Action]] = {
    "viewer": frozenset({"read"}),
    "approver": frozenset({"read", "approve"}),
    "operator": frozenset({"read", "operate"}),
    "admin": frozenset({"read", "approve", "operate", "admin"}),
}
_PREFIX = "fck_"  # recognizable in a leaked config or log, like other services' key prefixes


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    role: Role
    created_at: str
    revoked_at: str | None = None

    def may(self, action: Action) -> bool:
        return self.revoked_at is None and action in GRANTS[self.role]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(ops: OpsStore, role: str, *, by: str) -> tuple[ApiKey, str]:
    """A new key for `role`; returns its record and the secret, which is never stored or shown again.
    `by`: who asked (a key id, or 'cli' for a person at the server's shell)."""
    if role not in ROLES:
        raise ConfigError(f"--role: expected one of {', '.join(ROLES)}")
    key = ApiKey(f"key_{secrets.token_hex(6)}", role, utc_now())
    secret = _PREFIX + secrets.token_urlsafe(32)
    with ops.transaction() as conn:
        conn.execute(ops.api_keys.insert().values(key_id=key.key_id, role=key.role, key_hash=_digest(secret),
                                                  created_at=key.created_at))
    LineageLog(ops).append("api_key_created", key.key_id, {"key_id": key.key_id, "role": role, "by": by})
    return key, secret


def authenticate(ops: OpsStore, secret: str) -> ApiKey | None:
    """The live key with this secret, or None."""
    if not secret.startswith(_PREFIX):
        return None
    table = ops.api_keys
    with ops.engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.key_hash == _digest(secret))).first()
    if row is None or row.revoked_at is not None:
        return None
    return ApiKey(row.key_id, row.role, row.created_at)


def list_keys(ops: OpsStore) -> list[ApiKey]:
    table = ops.api_keys
    with ops.engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.created_at)).all()
    return [ApiKey(r.key_id, r.role, r.created_at, r.revoked_at) for r in rows]


def revoke_key(ops: OpsStore, key_id: str, *, by: str) -> bool:
    """Revoke a key (kept, for the record); False when no live key has this id."""
    table = ops.api_keys
    with ops.transaction() as conn:
        done = conn.execute(table.update().where(table.c.key_id == key_id, table.c.revoked_at.is_(None))
                            .values(revoked_at=utc_now())).rowcount
    if done:
        LineageLog(ops).append("api_key_revoked", key_id, {"key_id": key_id, "by": by})
    return bool(done)
