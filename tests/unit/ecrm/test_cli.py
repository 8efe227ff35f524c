"""The `ecrm` command's shell: its listing matches each module's parser (so only the chosen
command's module need be imported: tests/integration/test_cli_start.py), and a service that
cannot be reached is one line."""

from __future__ import annotations

import argparse
from importlib import import_module
from types import SimpleNamespace

import pytest
import redis

from ecrm.cli import unreachable
from ecrm.commands import COMMANDS, LISTED


def test_every_command_module_is_listed() -> None:
    # an unlisted module still works, but is imported for every command (slow --help)
    assert sorted(LISTED) == sorted(COMMANDS)


@pytest.mark.parametrize("module", sorted(LISTED))
def test_the_listing_says_what_each_modules_parser_says(module: str) -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    import_module(f"ecrm.commands.{module}").add_parser(sub)
    helps = {action.dest: action.help for action in sub._choices_actions}
    assert helps == LISTED[module]


def settings(**values: str) -> SimpleNamespace:
    return SimpleNamespace(
        redis_url="redis://:secret@10.0.0.5:6380/0",
        kafka_bootstrap="10.0.0.6:9092",
        clickhouse_url="http://analyst:pw@10.0.0.7:8123/ecrm",
        **values,
    )


def test_a_redis_nobody_runs_is_one_line_naming_it_and_what_to_do() -> None:
    error = redis.exceptions.ConnectionError("Error 111 connecting to 10.0.0.5:6380.")
    message = unreachable(error, settings())
    assert message is not None and "\n" not in message
    assert message.startswith("can't reach Redis at 10.0.0.5:6380")
    assert "ecrm up" in message and "ECRM_REDIS_URL" in message
    assert "secret" not in message


def test_a_kafka_nobody_runs_names_the_bootstrap() -> None:
    from kafka.errors import KafkaConnectionError

    message = unreachable(KafkaConnectionError("refused"), settings())
    assert message is not None and "10.0.0.6:9092" in message and "ECRM_KAFKA_BOOTSTRAP" in message


def test_a_clickhouse_server_nobody_runs_names_it_without_its_password() -> None:
    from clickhouse_connect.driver.exceptions import OperationalError

    message = unreachable(OperationalError("connection refused"), settings())
    assert message is not None and message.startswith("can't reach ClickHouse at 10.0.0.7:8123")
    assert "pw" not in message


def test_other_errors_are_not_turned_into_unreachable() -> None:
    assert unreachable(ValueError("a bug"), settings()) is None
    assert unreachable(redis.exceptions.ResponseError("WRONGTYPE"), settings()) is None
