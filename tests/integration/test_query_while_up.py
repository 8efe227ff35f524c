"""Analysts query while ecrm runs: with `ecrm up` holding the embedded ClickHouse, `ecrm sql`
and `ecrm rules backtest` answer exactly as they did on the stopped system, through the
owner's read-only socket (streams/clickhouse_served.py); the other commands find the running
stack through ECRM_DATA_DIR/ecrm.env (`ecrm env`); and a service nobody runs is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.errors import ClickHouseError
from streams.clickhouse_served import ServedClickHouse, served_socket
from streams.embedded import free_port
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "example.yaml"
GMV = ("sql", "gmv_by_segment", "--param", "since=2024-01-01", "--param", "until=2025-01-01")
BACKTEST = ("rules", "backtest", str(RULES), "--since", "2024-03-01", "--until", "2024-05-01")
SEED = textwrap.dedent(
    """
    import sys
    from streams.clickhouse import connect, migrate
    from tests.integration.analytics_history import generate

    ch = connect(sys.argv[1])
    migrate(ch)
    generate(20240501, customers=200).insert_into(ch)
    ch.close()
    """
)


@dataclass
class Place:
    """A directory an analyst works in, its data dir, and what the stopped system answered."""

    cwd: Path
    data_dir: Path
    env: dict[str, str]
    stopped_gmv: str = ""
    stopped_backtest: dict[str, object] | None = None

    def ecrm(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ecrm", *args],
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=180,
        )

    def answer(self, *args: str) -> str:
        done = self.ecrm(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout


def backtest_result(place: Place) -> dict[str, object]:
    """The backtest's JSON without how long it took (the only part a run may change)."""
    report = json.loads(place.answer(*BACKTEST, "--json"))
    for timing in ("seconds", "events_per_s"):
        report.pop(timing, None)
    return report


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    """A seeded embedded ClickHouse, queried stopped; then `ecrm up` on it until the end."""
    cwd = tmp_path_factory.mktemp("analyst")
    data_dir = cwd / ".ecrm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    place = Place(cwd, data_dir, {**env, "ECRM_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)})
    seed = [sys.executable, "-c", SEED, f"chdb://{data_dir / 'clickhouse'}"]
    subprocess.run(seed, cwd=REPO, env=place.env, check=True, timeout=180)
    place.stopped_gmv = place.answer(*GMV)
    place.stopped_backtest = backtest_result(place)

    log = (cwd / "up.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecrm", "up"],
        cwd=cwd,
        env=place.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        socket = served_socket(data_dir / "clickhouse")
        started = wait_for(lambda: socket.exists() and (data_dir / "ecrm.env").exists(), 90)
        assert started, (cwd / "up.log").read_text()
        yield place
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        log.close()
    assert not (data_dir / "ecrm.env").exists(), "ecrm up left its ecrm.env behind"
    assert not socket.exists(), "ecrm up left its socket behind"


def test_named_query_answers_while_up_as_on_the_stopped_system(up: Place) -> None:
    assert "important_value" in up.stopped_gmv, "the seeded history has orders"
    assert up.answer(*GMV) == up.stopped_gmv


def test_backtest_answers_while_up_as_on_the_stopped_system(up: Place) -> None:
    assert up.stopped_backtest and up.stopped_backtest["events"], "the window holds history"
    assert backtest_result(up) == up.stopped_backtest


def test_the_served_connection_reads_only(up: Place) -> None:
    ch = ServedClickHouse(served_socket(up.data_dir / "clickhouse"))
    try:
        assert ch.query("SELECT count() AS n FROM events")[0]["n"] > 0
        with pytest.raises(ClickHouseError, match="read-only"):
            ch.execute("DROP TABLE events")
        with pytest.raises(ClickHouseError, match="READONLY"):
            ch.query("INSERT INTO schema_migrations (version) VALUES (999)")
        with pytest.raises(ClickHouseError) as bad:
            ch.query("SELECT no_such_column FROM events")
        assert bad.value.code == 47  # the server's error, as a direct connection raises it
        assert ch.query("SELECT count() AS n FROM events")[0]["n"] > 0  # still served
    finally:
        ch.close()


def test_the_apis_clickhouse_reads_go_through_the_owner(up: Place) -> None:
    from ecrm.api.context import Analysis

    analysis = Analysis(f"chdb://{up.data_dir / 'clickhouse'}")  # as `ecrm api` opens it
    rows = analysis.run(lambda ch: ch.query("SELECT count() AS n FROM rule_decisions"))
    assert rows[0]["n"] > 0


def test_ecrm_env_prints_the_running_stacks_settings(up: Place) -> None:
    printed = dict(line.split("=", 1) for line in up.answer("env").splitlines())
    assert printed["ECRM_CLICKHOUSE_URL"] == f"chdb://{up.data_dir / 'clickhouse'}"
    assert printed["ECRM_REDIS_URL"].startswith("redis://127.0.0.1:")
    # another command run here reaches that Redis with nothing exported
    done = up.ecrm("profile", "nobody-yet")
    assert (done.returncode, done.stdout.strip()) == (1, "no profile for customer 'nobody-yet'")


def test_a_service_nobody_runs_is_one_line_saying_what_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECRM_")}
    env["ECRM_DATA_DIR"] = str(tmp_path / ".ecrm")  # no running stack there
    env["ECRM_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    done = subprocess.run(
        [sys.executable, "-m", "ecrm", "profile", "c-1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 69
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("ecrm: can't reach Redis at 127.0.0.1:")
    assert "ecrm up" in done.stderr and "ECRM_REDIS_URL" in done.stderr
