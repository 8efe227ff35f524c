"""The `ecrm` command's shell: only the chosen command's module is imported (no Faust, Redis
or FastAPI for `--help` and light commands), its listing matches each module's parser, and a
service that cannot be reached is one line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from importlib import import_module
from types import SimpleNamespace

import pytest
import redis

from ecrm.cli import unreachable
from ecrm.commands import COMMANDS, LISTED

HEAVY = ("faust", "redis", "fastapi", "pydantic_settings", "clickhouse_connect", "kafka")


def imported_by(argv: list[str]) -> set[str]:
    """Which heavy libraries `ecrm ARGV` imports, run in a fresh interpreter."""
    script = textwrap.dedent(
        f"""
        import sys
        from ecrm.cli import main
        try:
            main({argv!r})
        except SystemExit:
            pass
        print(" ".join(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.splitlines()[-1].split())


def test_help_imports_no_heavy_library() -> None:
    assert imported_by(["--help"]) == set()


def test_listing_the_named_queries_needs_no_redis_faust_or_clickhouse_client() -> None:
    assert imported_by(["sql", "--list"]) <= {"pydantic_settings"}


def test_a_commands_help_imports_only_that_command() -> None:
    assert "faust" not in imported_by(["sql", "--help"])


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


def test_a_bad_setting_is_one_line_naming_it(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    env.update(ECRM_PARTITIONS="many", ECRM_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "ecrm", "sql", "--list"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("ecrm: bad setting: ECRM_PARTITIONS='many': ")
    assert len(done.stderr.splitlines()) == 1
