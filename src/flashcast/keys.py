"""The PII hashing key: loaded from the environment, or from a local key file for demos."""

from __future__ import annotations

import hashlib
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

from flashcast.config import PrivacyPolicy
from flashcast.errors import ConfigError
from flashcast.inplace import make_folder, write_whole

_BLOCK = 64  # SHA-256 block size, for HMAC pads
MIN_KEY_CHARS = 16


@dataclass(frozen=True, repr=False)
class PiiKey:
    """An HMAC-SHA256 key. `key_id` is a one-way tag recorded in lineage so keys can rotate."""

    secret: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"flashcast-key-id\x00" + self.secret).hexdigest()[:16]

    def pads(self) -> tuple[bytes, bytes]:
        """HMAC inner and outer pads (RFC 2104), so SQL engines can compute HMAC with plain sha256."""
        key = hashlib.sha256(self.secret).digest() if len(self.secret) > _BLOCK else self.secret
        key = key.ljust(_BLOCK, b"\x00")
        return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)

    def __repr__(self) -> str:  # never print the secret
        return f"PiiKey(key_id={self.key_id})"


def create_pii_key(policy: PrivacyPolicy, key_file: Path) -> tuple[PiiKey, str, bool]:
    """The key in force, where it comes from, and whether it was just created (as `key_file`, 0600)."""
    if os.environ.get(policy.key_env):
        return load_pii_key(policy, key_file), f"${policy.key_env}", False
    existed = key_file.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # creating it is what was asked for
        key = load_pii_key(policy, key_file, create_if_missing=True)
    return key, str(key_file), not existed


def load_pii_key(policy: PrivacyPolicy, key_file: Path, *, create_if_missing: bool = False) -> PiiKey:
    """Key from `$FLASHCAST_PII_KEY` (policy.key_env); else from `key_file`; else create it (demo only)."""
    from_env = os.environ.get(policy.key_env)
    if from_env:
        if len(from_env) < MIN_KEY_CHARS:
            raise ConfigError(f"${policy.key_env} is too short: use at least {MIN_KEY_CHARS} characters")
        return PiiKey(from_env.encode())
    if key_file.exists():
        return _read_key_file(key_file)
    if not create_if_missing:
        raise ConfigError(f"no PII key: set ${policy.key_env} or run `flashcast keys pii` to create {key_file}")
    make_folder(key_file.parent, "[store] home or [policy] key_file")
    write_whole(key_file, (secrets.token_hex(32) + "\n").encode("ascii"), mode=0o600)  # the owner's only
    warnings.warn(
        f"${policy.key_env} is not set: created a local key in {key_file}. "
        "Use a managed secret in production; hashes change if this file is lost.",
        UserWarning,
        stacklevel=2,
    )
    return _read_key_file(key_file)


def _read_key_file(key_file: Path) -> PiiKey:
    try:
        text = key_file.read_text(encoding="ascii").strip()
    except UnicodeDecodeError:
        text = ""
    if len(text) < MIN_KEY_CHARS:  # an empty or cut file must not become an empty HMAC key
        raise ConfigError(f"{key_file}: the PII key file holds no key of at least {MIN_KEY_CHARS} ASCII characters; "
                          "restore it from your backup (hashes made with another key will not match)")
    return PiiKey(text.encode())
