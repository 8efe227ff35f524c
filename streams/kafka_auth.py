"""How ecrm's Kafka clients authenticate: one description, in each client library's words.

A production broker (docker-compose.yml) takes SASL/SCRAM over TLS or, on a private network,
SASL/SCRAM without it; the embedded one takes PLAINTEXT. The Faust app, the admin client,
the relay's topic reader, the resume probe and the bulk producer all get their options from
here, built once from the settings (`KafkaAuth.of`), so no client connects unauthenticated
because one call site was missed.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from schemas.errors import ConfigError
from streams.settings import Settings


@dataclass(frozen=True)
class KafkaAuth:
    """security.protocol, sasl.mechanism, the SCRAM user and the CA of the broker's TLS."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = None
    cafile: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> KafkaAuth:
        password = settings.kafka_password
        auth = cls(
            protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_username,
            password=password.get_secret_value() if password is not None else None,
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        )
        if auth.sasl and not (auth.username and auth.password):
            raise ConfigError(
                f"ECRM_KAFKA_SECURITY_PROTOCOL={auth.protocol} needs ECRM_KAFKA_USERNAME and "
                "ECRM_KAFKA_PASSWORD (the worker's SCRAM user, docs/operations.md)"
            )
        return auth

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verifies the broker against `cafile` (else the system CAs) when TLS is on."""
        return ssl.create_default_context(cafile=self.cafile) if self.tls else None

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments of aiokafka's clients."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return options

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments of kafka-python's clients (the admin client)."""
        options = self.aiokafka()
        if self.tls:
            options.pop("ssl_context")
            options["ssl_cafile"] = self.cafile
            options["ssl_check_hostname"] = True
        return options

    def faust(self) -> Any:
        """Faust's `broker_credentials` (None for PLAINTEXT)."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                mechanism=self.mechanism,
                ssl_context=self.ssl_context(),
            )
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


PLAINTEXT = KafkaAuth()
