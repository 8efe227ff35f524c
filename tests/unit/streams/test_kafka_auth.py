"""Kafka authentication from the settings: SCRAM needs its user, TLS verifies the broker, and
each client library gets the option names it knows."""

from __future__ import annotations

import ssl

import pytest

from schemas.errors import ConfigError
from streams.kafka_auth import KafkaAuth
from streams.settings import Settings


def test_the_embedded_broker_takes_plaintext_and_no_credentials() -> None:
    auth = KafkaAuth.of(Settings())
    assert auth.aiokafka() == {"security_protocol": "PLAINTEXT"}
    assert auth.faust() is None


def test_scram_without_its_user_is_refused_with_the_settings_to_set() -> None:
    with pytest.raises(ConfigError, match="ECRM_KAFKA_USERNAME and ECRM_KAFKA_PASSWORD"):
        KafkaAuth.of(Settings(kafka_security_protocol="SASL_SSL"))


def test_scram_over_tls_gives_each_client_its_own_option_names() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_username="ecrm-worker",
        kafka_password="a-long-password",  # noqa: S106 - a test value
    )
    auth = KafkaAuth.of(settings)
    options = auth.aiokafka()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "ecrm-worker"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert "ssl_context" not in auth.kafka_python() and auth.kafka_python()["ssl_check_hostname"]
    credentials = auth.faust()
    assert credentials.username == "ecrm-worker" and credentials.ssl_context is not None
    assert "a-long-password" not in repr(settings) and "KAFKA_PASSWORD" not in str(
        settings.as_env()
    )
