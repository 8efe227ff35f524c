"""The API's keys: write keys per source, read keys apart, kept only as SHA-256 hashes.

A key is 32 random bytes (hex), sent as Segment does: HTTP Basic with the key as the user and
no password. The keys file (ECRM_API_KEYS_FILE, default DATA_DIR/api-keys.yaml) holds

    keys:
      - {name: web-shop, kind: write, sha256: 9f86d0…, rate_per_s: 500}
      - {name: crm-desk, kind: read, sha256: 2c26b4…}

A fast hash is enough here: the keys are random, not passwords a person chose, so there is
nothing to guess from a hash (as with GitHub's tokens). `ecrm api key add` makes one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import ConfigError

Kind = Literal["write", "read"]


class ApiKey(BaseModel):
    """One key as the keys file holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    kind: Kind
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: events a second this key may send (None: ECRM_API_RATE_PER_S)
    rate_per_s: float | None = Field(default=None, gt=0)


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(default_factory=list)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: Path) -> list[ApiKey]:
    """The keys in `path` (none when it does not exist); ConfigError naming what is wrong."""
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        keys = KeysFile.model_validate(data).keys
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"API keys file {path}: {exc}") from exc
    names = [k.name for k in keys]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"API keys file {path}: key names used twice: {', '.join(twice)}")
    return keys


def add_key(path: Path, name: str, kind: Kind, rate_per_s: float | None = None) -> str:
    """Make a new key, store its hash in `path` and return the key (shown once, never kept)."""
    keys = load_keys(path)
    if any(k.name == name for k in keys):
        raise ConfigError(f"API keys file {path} already has a key named {name!r}")
    key = secrets.token_hex(32)
    keys.append(ApiKey(name=name, kind=kind, sha256=key_hash(key), rate_per_s=rate_per_s))
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"keys": [k.model_dump(exclude_none=True) for k in keys]}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return key


@dataclass(frozen=True)
class Refusal:
    """Why a request may not go on: 401 (who are you) or 403 (not with this key)."""

    status: int
    reason: str


class Keyring:
    """Which key a request's Authorization header is, and whether it may do what it asks."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_hash = {k.sha256: k for k in keys}

    def __len__(self) -> int:
        return len(self._by_hash)

    def check(self, authorization: str | None, needed: Kind) -> ApiKey | Refusal:
        key = basic_user(authorization)
        if key is None:
            return Refusal(
                401,
                f"no {needed} key: send HTTP Basic with the key as the user (curl -u KEY: ...)",
            )
        digest = key_hash(key)
        found = next((k for h, k in self._by_hash.items() if hmac.compare_digest(h, digest)), None)
        if found is None:
            return Refusal(
                401, f"unknown key: it is not in the API keys file ({needed} key needed)"
            )
        if found.kind != needed:
            return Refusal(
                403,
                f"key {found.name!r} is a {found.kind} key; this needs a {needed} key",
            )
        return found


def basic_user(authorization: str | None) -> str | None:
    """The user of an HTTP Basic header (Segment sends the write key there), or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user = decoded.partition(":")[0]
    return user or None
