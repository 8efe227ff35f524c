"""The interface every channel adapter implements, and the outcome of HTTP answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from agents.delivery.render import Rendered
from schemas.delivery import Secret
from schemas.errors import ConfigError
from schemas.outputs import Action


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: `sent` (the provider took it), `failed` (it never will:
    do not retry), `retry` (try again later)."""

    status: Literal["sent", "failed", "retry"]
    provider_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Message:
    """What an adapter sends: the action, the recipient's address on the channel (None for a
    webhook: the shop knows its customers), the rendered template, the coupon code."""

    action: Action
    address: str | None
    rendered: Rendered | None
    coupon_code: str | None = None


class Channel(Protocol):
    #: the provider's name in the delivery file (rate limits and receipts use it)
    name: str

    async def send(self, message: Message) -> Outcome: ...

    async def close(self) -> None: ...


def http_outcome(status: int, body: str, provider_id: str = "") -> Outcome:
    """2xx sent; 408, 425, 429 and 5xx retried; any other 4xx failed at once (a request the
    provider refuses is refused again)."""
    if 200 <= status < 300:
        return Outcome("sent", provider_id)
    reason = f"HTTP {status}: {body[:300]}"
    if status in (408, 425, 429) or status >= 500:
        return Outcome("retry", reason=reason)
    return Outcome("failed", reason=reason)


def read_secret(secret: Secret) -> str:
    """A credential from its environment variable or secret file; ConfigError naming where
    it was looked for (never the value)."""
    import os

    if secret.env is not None:
        value = os.environ.get(secret.env)
        if not value:
            raise ConfigError(f"the environment variable {secret.env} is not set")
        return value
    assert secret.file is not None
    try:
        return Path(secret.file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"the secret file {secret.file} cannot be read: {exc.strerror}") from exc
