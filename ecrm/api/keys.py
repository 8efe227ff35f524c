"""The API's keys: write keys per source, read keys apart, kept only as SHA-256 hashes.

A key is 32 random bytes (hex), sent as Segment does: HTTP Basic with the key as the user and
no password. The keys file (ECRM_API_KEYS_FILE, default DATA_DIR/api-keys.yaml) holds

    keys:
      - {name: web-shop, kind: write, sha256: 9f86d0…, rate_per_s: 500,
         origins: ["https://shop.example"]}
      - {name: crm-desk, kind: read, sha256: 2c26b4…}

A write key used by a shop's web pages (analytics.js) names the origins those pages are
served from; a browser may send with the key only from them (CORS, `ecrm/api/cors.py`).
The key is public there, in the page: `origins` and the key's rate are what bound it.

A fast hash is enough here: the keys are random, not passwords a person chose, so there is
nothing to guess from a hash (as with GitHub's tokens). `ecrm api key add` makes one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.errors import ConfigError

Kind = Literal["write", "read"]

#: an origin as browsers send it: scheme://host[:port], no path; or "*" for any
_ORIGIN = re.compile(r"^https?://[^/\s:]+(:\d{1,5})?$")


def checked_origin(origin: str) -> str:
    """`origin` as a browser sends it (lower case, no trailing slash); ValueError saying the
    form when it is not one."""
    value = origin.strip().rstrip("/").lower()
    if value != "*" and not _ORIGIN.match(value):
        raise ValueError(
            f"origin {origin!r} is not scheme://host[:port] (e.g. https://shop.example), or *"
        )
    return value


class ApiKey(BaseModel):
    """One key as the keys file holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    kind: Kind
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: events a second this key may send (None: ECRM_API_RATE_PER_S)
    rate_per_s: float | None = Field(default=None, gt=0)
    #: web origins whose pages may send with this key (browsers; CORS); "*" for any
    origins: tuple[str, ...] = ()

    @field_validator("origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(checked_origin(o) for o in origins)

    def allows_origin(self, origin: str) -> bool:
        return "*" in self.origins or origin.rstrip("/").lower() in self.origins


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


def add_key(
    path: Path,
    name: str,
    kind: Kind,
    rate_per_s: float | None = None,
    origins: tuple[str, ...] = (),
) -> str:
    """Make a new key, store its hash in `path` and return the key (shown once, never kept)."""
    keys = load_keys(path)
    if any(k.name == name for k in keys):
        raise ConfigError(f"API keys file {path} already has a key named {name!r}")
    if origins and kind != "write":
        raise ConfigError("--origin is for write keys: browsers send events, never read")
    try:
        origins = tuple(checked_origin(o) for o in origins)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    key = secrets.token_hex(32)
    keys.append(
        ApiKey(name=name, kind=kind, sha256=key_hash(key), rate_per_s=rate_per_s, origins=origins)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "keys": [
            {**k.model_dump(exclude_none=True, exclude={"origins"}), **_origins_of(k)} for k in keys
        ]
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return key


def _origins_of(key: ApiKey) -> dict[str, list[str]]:
    return {"origins": list(key.origins)} if key.origins else {}


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

    def any_allows_origin(self, origin: str) -> bool:
        """Whether some write key may be used from `origin` (a preflight names no key)."""
        return any(k.kind == "write" and k.allows_origin(origin) for k in self._by_hash.values())

    def check(self, authorization: str | None, needed: Kind) -> ApiKey | Refusal:
        return self.check_key(basic_user(authorization), needed)

    def check_key(self, key: str | None, needed: Kind) -> ApiKey | Refusal:
        """As `check`, for a key sent otherwise (the browser library's `writeKey` in the body)."""
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
