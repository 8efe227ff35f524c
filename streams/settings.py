"""The one settings object (prefix ECRM_), built once at the top and passed down."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigError
from schemas.events import TimeWindow

if TYPE_CHECKING:  # redis is imported when a client is made: `ecrm sql` needs none
    from streams.redis_client import SyncRedis

#: Where the embedded stack listens unless told otherwise; `ecrm up` prints the real values.
EMBEDDED_KAFKA = "127.0.0.1:19092"
EMBEDDED_REDIS = "redis://127.0.0.1:16379/0"
EMBEDDED_CLICKHOUSE = "chdb://.ecrm/clickhouse"
#: URL schemes of a Redis Cluster (streams/redis_client.py); here so that reading the
#: settings does not import the Redis client.
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_RULES = REPO_ROOT / "rules" / "example.yaml"
#: The privacy key of the embedded stack when ECRM_PRIVACY_SECRET is unset: published here, so
#: it protects nothing; a ClickHouse server (production) refuses to run without a real one.
DEV_PRIVACY_KEY = b"ecrm-embedded-development-key-not-a-secret"
EXAMPLE_MEMBERSHIP = REPO_ROOT / "rules" / "membership.yaml"
EXAMPLE_DELIVERY = REPO_ROOT / "rules" / "delivery.yaml"


class Settings(BaseSettings):
    """Everything an operator can set. Frozen: build once, pass down."""

    model_config = SettingsConfigDict(
        env_prefix="ECRM_", env_file=".env", extra="ignore", frozen=True
    )

    kafka_bootstrap: str = EMBEDDED_KAFKA
    #: How the Kafka clients authenticate (streams/kafka_auth.py, docs/operations.md): the
    #: embedded broker takes PLAINTEXT; docker-compose's takes SASL/SCRAM.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    #: CA file that signed the broker's certificate (SSL, SASL_SSL); the system CAs if unset
    kafka_ssl_cafile: Path | None = None
    redis_url: str = EMBEDDED_REDIS
    #: Redis is a cluster (also when the URL is `redis+cluster://`): keys are hash-tagged by
    #: partition and every unit stays in one slot (streams/redis_client.py).
    redis_cluster: bool = False
    #: Replicas each unit's writes must reach before the worker moves on (Redis WAIT); None:
    #: 1 on a cluster (a failover then loses no unit the worker went past), 0 on one server.
    redis_wait_replicas: int | None = Field(default=None, ge=0)
    #: How long a unit waits for them; past it the worker goes on and says so.
    redis_wait_ms: int = Field(default=1000, ge=1)
    clickhouse_url: str = EMBEDDED_CLICKHOUSE
    rules_file: Path = EXAMPLE_RULES
    #: The membership programme (levels, points, benefits, tags; docs/membership.md),
    #: re-read when it changes like the rules file. Empty (`ECRM_MEMBERSHIP_FILE=`): no
    #: programme — no levels, points or tags, and no membership work at all per event.
    membership_file: Path | None = EXAMPLE_MEMBERSHIP
    #: What `ecrm deliver` sends through which provider, and the templates (docs/delivery.md);
    #: re-read when it changes like the rules file. Credentials come from the environment.
    delivery_file: Path = EXAMPLE_DELIVERY
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
    #: Back-pressure (docs/operations.md "bad day"): while the ClickHouse outbox holds more
    #: rows than this (ClickHouse down or slow), the worker stops fetching its input topics,
    #: so Redis does not fill up; it fetches again below half of it.
    clickhouse_outbox_max_rows: int = Field(default=1_000_000, ge=1)
    #: Days each ClickHouse table keeps its rows, as JSON (`{"rule_decisions": 730}`); a table
    #: not named keeps them forever, the default for all (analysts own that choice). Tables:
    #: streams/clickhouse.py TTL_COLUMNS.
    clickhouse_ttl_days: dict[str, int] = Field(default_factory=dict)
    #: How often the worker looks at the outbox's depth.
    backpressure_check_s: float = Field(default=1.0, gt=0)
    #: Who drains the ClickHouse outbox: "auto" = a worker drains unless ClickHouse is chdb
    #: (embedded, single process: the stack process drains); "yes"/"no" force it.
    sink: Literal["auto", "yes", "no"] = "auto"
    #: The ClickHouse sink (streams/sink.py): the most rows one insert merges from outbox
    #: entries of a table; the least time between two partial inserts into a table (a full
    #: one goes at once), so ClickHouse sees few, large parts; how long rows ClickHouse
    #: refused stay in `ecrm:outbox:rejects` for `ecrm sink retry` before they are trimmed.
    sink_max_rows: int = Field(default=100_000, ge=1)
    sink_min_interval_s: float = Field(default=1.0, ge=0)
    sink_rejects_max_age_days: float = Field(default=30.0, gt=0)
    #: Key of the HMAC that turns buyer names into customer ids (`ecrm import`, `ecrm profile
    #: --buyer`). No default and no generated one: a key that differed between machines or
    #: working folders would silently split every customer in two (docs/import.md).
    pii_secret: SecretStr | None = None
    #: Whether a customer who never said anything about a channel may be contacted on it
    #: (docs/privacy.md, "Consent"). `granted` keeps ecrm's behaviour from before consent was
    #: recorded; PIPL art. 13-14 and the GDPR expect opt-in for marketing: a shop whose
    #: storefront reports consent on `ecrm.customers` should set `denied`.
    consent_default: Literal["granted", "denied"] = "granted"
    #: Key of the keyed hashes that must not be recomputable from a leaked id: the erasure
    #: list, unsubscribe tokens, personal data found in events (docs/privacy.md). Required
    #: with a ClickHouse server; the embedded stack (chdb://) falls back to a fixed,
    #: published development key (`DEV_PRIVACY_KEY`) so `ecrm demo` runs without setup.
    privacy_secret: SecretStr | None = None
    #: Storefront fields (comma-separated names of unknown fields, e.g. `nickname,mobile`) that
    #: hold personal data: the worker replaces their values by keyed hashes before anything is
    #: stored or forwarded. Phone numbers and e-mail addresses are found without being named
    #: (in the customer id and every unknown field; docs/privacy.md).
    pii_fields: str = ""

    # `ecrm api` (docs/api.md): where it listens, the file of its hashed keys (None: the
    # data folder's api-keys.yaml), the events a second each key may send (with a burst of
    # a second's worth, at least one full batch), and how long a refused client should wait.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_keys_file: Path | None = None
    api_rate_per_s: float = Field(default=1000.0, gt=0)
    api_retry_after_s: int = Field(default=5, ge=1)
    #: A worker's Prometheus endpoint (`/metrics` on this port); None: no endpoint.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("clickhouse_ttl_days")
    @classmethod
    def _known_ttl_tables(cls, days: dict[str, int]) -> dict[str, int]:
        from streams.clickhouse import TTL_COLUMNS

        for table, n in days.items():
            if table not in TTL_COLUMNS:
                raise ConfigError(
                    f"ECRM_CLICKHOUSE_TTL_DAYS: {table!r} cannot expire rows (tables that can: "
                    f"{', '.join(TTL_COLUMNS)})"
                )
            if n < 1:
                raise ConfigError(f"ECRM_CLICKHOUSE_TTL_DAYS: {table} keeps {n} days; at least 1")
        return days

    @field_validator("membership_file", mode="before")
    @classmethod
    def _empty_is_no_programme(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

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

    @field_validator("privacy_secret")
    @classmethod
    def _strong_privacy_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < 16:
            raise ConfigError(
                "ECRM_PRIVACY_SECRET is shorter than 16 characters; make one with "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        return secret

    @property
    def pii_field_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.pii_fields.split(",") if name.strip())

    @property
    def consent_granted(self) -> bool:
        """ECRM_CONSENT_DEFAULT as the rules read it."""
        return self.consent_default == "granted"

    @property
    def embedded(self) -> bool:
        """Running on the embedded stack (chdb), i.e. on a developer's machine."""
        return self.clickhouse_url.startswith("chdb://")

    def privacy_key(self) -> bytes:
        """The key of erasure hashes and unsubscribe tokens; on the embedded stack only, the
        development key when none is set. A ConfigError saying how to set it otherwise: a
        key that changed would forget every erasure and void every unsubscribe link."""
        if self.privacy_secret is not None:
            return self.privacy_secret.get_secret_value().encode()
        if self.embedded:
            return DEV_PRIVACY_KEY
        raise ConfigError(
            "ECRM_PRIVACY_SECRET is not set: erasures and unsubscribe tokens are keyed hashes "
            "under it. Make one once with `python -c 'import secrets; "
            "print(secrets.token_hex(32))'` and give the same value to every worker and "
            "`ecrm customer` command; never change it (docs/privacy.md)"
        )

    @field_validator("redis_url")
    @classmethod
    def _known_redis_scheme(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)):
            raise ConfigError(
                f"ECRM_REDIS_URL={url!r}: use redis://[:password@]host:port/db, or "
                "redis+cluster://[:password@]host:port for a Redis Cluster (any one node)"
            )
        return url

    @property
    def redis_is_cluster(self) -> bool:
        from streams.redis_client import is_cluster

        return is_cluster(self.redis_url, self.redis_cluster)

    @property
    def redis_replicas_to_wait_for(self) -> int:
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_is_cluster else 0

    def redis(self, **options: Any) -> SyncRedis:
        """A client of the shop's Redis, one server or a cluster (streams/redis_client.py)."""
        from streams.redis_client import sync_client

        return sync_client(self.redis_url, self.redis_cluster, **options)

    @property
    def keys_file(self) -> Path:
        """The API's keys file (ECRM_API_KEYS_FILE, else DATA_DIR/api-keys.yaml)."""
        return self.api_keys_file or self.data_dir / "api-keys.yaml"

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
        values = self.model_dump(
            exclude={"pii_secret", "privacy_secret", "kafka_password"}, exclude_none=True
        )
        env = {
            f"ECRM_{name.upper()}": json.dumps(value) if isinstance(value, dict) else str(value)
            for name, value in values.items()
        }
        if self.membership_file is None:  # said, or the other process takes the shipped one
            env["ECRM_MEMBERSHIP_FILE"] = ""
        return env
