"""The privacy settings: no key, no production worker; the published development key only on
the embedded stack; consent by default as before unless the shop opts in to `denied`."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigError
from streams.settings import DEV_PRIVACY_KEY, Settings

SERVER = "http://ecrm:pw@clickhouse:8123/ecrm"


def test_a_clickhouse_server_needs_a_privacy_secret_and_says_how_to_make_one() -> None:
    with pytest.raises(ConfigError, match="ECRM_PRIVACY_SECRET is not set.*token_hex"):
        Settings(clickhouse_url=SERVER).privacy_key()
    key = "k" * 32
    assert Settings(clickhouse_url=SERVER, privacy_secret=key).privacy_key() == key.encode()


def test_only_the_embedded_stack_falls_back_to_the_published_development_key() -> None:
    assert Settings(clickhouse_url="chdb:///tmp/x").privacy_key() == DEV_PRIVACY_KEY


def test_a_short_privacy_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="shorter than 16"):
        Settings(privacy_secret="short")


def test_secrets_are_never_among_the_settings_printed() -> None:
    s = Settings(privacy_secret="p" * 20, pii_secret="q" * 20, kafka_password="r" * 20)
    printed = " ".join(f"{k}={v}" for k, v in s.as_env().items())
    assert "ppppp" not in printed and "qqqqq" not in printed and "rrrrr" not in printed


def test_consent_is_granted_by_default_and_denied_when_the_shop_opts_in() -> None:
    assert Settings().consent_granted
    assert not Settings(consent_default="denied").consent_granted
    assert Settings(pii_fields=" nickname, receiver ,").pii_field_names == {"nickname", "receiver"}
