"""How `ecrm` starts, in a fresh interpreter each: `--help` and light commands import no
Faust, Redis, FastAPI or ClickHouse client (only the chosen command's module is imported),
and a bad setting is one line. No service is needed; these are here for their subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

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


def test_reading_a_profile_needs_no_faust() -> None:
    assert "faust" not in imported_by(["profile", "--help"])


def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    env.update(ECRM_PARTITIONS="many", ECRM_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "ecrm", "sql", "--list"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("ecrm: bad setting: ECRM_PARTITIONS='many': ")
    assert len(done.stderr.splitlines()) == 1
