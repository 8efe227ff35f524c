"""The one settings object (prefix ECRM_), built once at the top and passed down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigError
from schemas.events import TimeWindow

#: Where the embedded stack listens unless told otherwise; `ecrm up` prints the real values.
EMBEDDED_KAFKA = "127.0.0.1:19092"
EMBEDDED_REDIS = "redis://127.0.0.1:16379/0"
EMBEDDED_CLICKHOUSE = "chdb://.ecrm/clickhouse"
REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_RULES = REPO_ROOT / "rules" / "example.yaml"
EXAMPLE_MEMBERSHIP = REPO_ROOT / "rules" / "membership.yaml"


class Settings(BaseSettings):
    """Everything an operator can set. Frozen: build once, pass down."""

    model_config = SettingsConfigDict(
        env_prefix="ECRM_", env_file=".env", extra="ignore", frozen=True
    )

    kafka_bootstrap: str = EMBEDDED_KAFKA
    redis_url: str = EMBEDDED_REDIS
    clickhouse_url: str = EMBEDDED_CLICKHOUSE
    rules_file: Path = EXAMPLE_RULES
    #: The membership programme (levels, points, benefits, tags; docs/membership.md),
    #: re-read when it changes like the rules file.
    membership_file: Path = EXAMPLE_MEMBERSHIP
    topic_prefix: str = "ecrm."

    #: Partitions of every input topic (tables are co-partitioned with them).
    partitions: int = Field(default=4, ge=1)
    #: Faust application id = consumer group id.
    app_id: str = "ecrm"
    #: Where embedded services and the worker keep files.
    data_dir: Path = Path(".ecrm")

    # RFM policy: the rolling window and the thresholds that split "high" from "low".
    rfm_window_days: int = Field(default=365, ge=1)
    r_high_days: int = Field(
        default=30,
        ge=0,
        description="R is high when the last paid order is at most this many days old",
    )
    f_high_orders: int = Field(
        default=2, ge=1, description="F is high at this many paid orders in the window"
    )
    m_high_amount: Decimal = Field(
        default=Decimal("500"), ge=0, description="M is high at this net spend in the window"
    )

    # Event-time sanity window: an event whose `ts` is before ts_min, or more than
    # ts_max_future_s after the receiving worker's clock, is dead-lettered with the reason.
    ts_min: AwareDatetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="the earliest event time accepted (ISO-8601 with an offset)",
    )
    ts_max_future_s: float = Field(
        default=86400.0,
        gt=0,
        description="how far ahead of the worker's clock an event time may be, in seconds "
        "(a window past the end of the calendar ends there)",
    )

    #: How often the worker looks for customers whose segment changed by time passing.
    sweep_interval_s: float = Field(default=0.25, gt=0)
    #: How often the worker looks at the rules file for changes (hot reload).
    rules_reload_s: float = Field(default=1.0, gt=0)
    #: Most input messages one fetch hands the worker as a batch (Kafka's max.poll.records);
    #: a fetch returns at once with what has arrived, so this bounds size, never adds wait.
    #: 5,000 and 10,000 cost as much CPU per event as 2,000, hold more memory and make each
    #: Redis step longer (docs/benchmarks.md).
    batch_max: int = Field(default=2000, ge=1)
    #: The Kafka relay (streams/relay.py): the largest message (key + value bytes) it sends —
    #: larger ones go to the `ecrm:relay:rejects` stream — keep it at or below the topics'
    #: `max.message.bytes`; how long a relay's heartbeat lasts before others take over its
    #: entries; the longest pause between retries after a send error.
    relay_max_message_bytes: int = Field(default=1_048_576, ge=1)
    relay_heartbeat_ttl_s: float = Field(default=10.0, gt=0)
    relay_retry_max_s: float = Field(default=30.0, gt=0)
    #: Who drains the ClickHouse outbox: "auto" = a worker drains unless ClickHouse is chdb
    #: (embedded, single process: the stack process drains); "yes"/"no" force it.
    sink: Literal["auto", "yes", "no"] = "auto"
    #: Key of the HMAC that turns buyer names into customer ids (`ecrm import`, `ecrm profile
    #: --buyer`). No default and no generated one: a key that differed between machines or
    #: working folders would silently split every customer in two (docs/import.md).
    pii_secret: SecretStr | None = None

    @field_validator("clickhouse_url")
    @classmethod
    def _known_clickhouse_scheme(cls, url: str) -> str:
        if not url.startswith(("chdb://", "http://", "https://")):
            raise ConfigError(
                f"ECRM_CLICKHOUSE_URL={url!r}: use chdb:///path (embedded) or http(s)://user:pass@host:port/db"
            )
        return url

    @field_validator("pii_secret")
    @classmethod
    def _strong_pii_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < 16:
            raise ConfigError(
                "ECRM_PII_SECRET is shorter than 16 characters; make one with "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        return secret

    def pii_key(self) -> bytes:
        """The HMAC key for buyer names; a ConfigError saying how to set it when unset."""
        if self.pii_secret is None:
            raise ConfigError(
                "ECRM_PII_SECRET is not set: buyer names become customer ids through an HMAC "
                "keyed with it. Make one once with `python -c 'import secrets; "
                "print(secrets.token_hex(32))'`, keep it with the shop's other secrets and "
                "set it for every `ecrm import` and `ecrm profile --buyer` (a lost or changed "
                "secret gives every buyer a new id)"
            )
        return self.pii_secret.get_secret_value().encode()

    @field_validator("redis_url")
    @classmethod
    def _known_redis_scheme(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"ECRM_REDIS_URL={url!r}: use redis://[:password@]host:port/db")
        return url

    def time_window(self, now: datetime) -> TimeWindow:
        """The event times a worker whose clock says `now` accepts."""
        return TimeWindow(self.ts_min, now, timedelta(seconds=self.ts_max_future_s))

    def topic(self, name: str) -> str:
        """Full topic name for a contract name such as 'orders' or 'dead-letter'."""
        return f"{self.topic_prefix}{name}"

    @property
    def sink_in_worker(self) -> bool:
        if self.sink == "auto":
            return not self.clickhouse_url.startswith("chdb://")
        return self.sink == "yes"

    def as_env(self) -> dict[str, str]:
        """The ECRM_* variables that point another process at the same services and policy."""
        # never the PII secret: the workers do not need it, and `ecrm up` prints these
        values = self.model_dump(exclude={"pii_secret"})
        return {f"ECRM_{name.upper()}": str(value) for name, value in values.items()}
