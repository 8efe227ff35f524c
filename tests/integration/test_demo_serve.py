"""`ecrm demo --serve`: after its summary the stack, the worker and the API stay up, the printed
keys work (an order sent over HTTP comes back in the profile), and Ctrl-C ends it all,
leaving no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.integration.api_server import free_port
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Every living process below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_demo_serve_keeps_everything_up_until_ctrl_c(tmp_path):
    port = free_port()
    env = {**os.environ, "ECRM_API_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ecrm",
            "demo",
            "--customers",
            "150",
            "--sessions",
            "400",
            "--serve",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        keys = wait_for(
            lambda: (
                (text := "".join(lines))
                and re.search(r"read key\s+(\w+)", text)
                and re.search(r"write key\s+(\w+)", text)
                and text
            ),
            timeout=300,
            what="the demo to serve",
        )
        read = re.search(r"read key\s+(\w+)", keys).group(1)  # type: ignore[union-attr]
        write = re.search(r"write key\s+(\w+)", keys).group(1)  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}/" in keys
        url = f"http://127.0.0.1:{port}"
        order = {
            "userId": "walk-in",
            "event": "Order Completed",
            "properties": {"order_id": "w-1", "total": 99},
        }
        sent = httpx.post(f"{url}/v1/track", json=order, auth=(write, ""), timeout=30)
        assert sent.status_code == 200, sent.text

        def frequency() -> int:
            got = httpx.get(f"{url}/v1/profiles/walk-in", auth=(read, ""), timeout=30)
            return got.json()["frequency"] if got.status_code == 200 else 0

        wait_for(lambda: frequency() == 1, what="the order in the profile")
        page = httpx.get(f"{url}/", auth=(read, ""), timeout=30)
        assert page.status_code == 200 and "important_value" in page.text
        started = descendants(proc.pid)
        assert started, "the demo runs its worker and services as child processes"
        printed = wait_for(
            lambda: "ECRM_PARTITIONS=" in (text := "".join(lines)) and text,
            what="the ECRM_* lines",
        )
        analysts_query_while_it_serves(tmp_path, env, printed)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=120)
        reader.join(timeout=10)
    wait_for(lambda: not [p for p in started if alive(p)], timeout=30, what="every child to end")
    demo_dir = re.search(r"embedded stack under (\S+) ", "".join(lines)).group(1)  # type: ignore[union-attr]
    assert not Path(demo_dir).exists(), "the demo's temporary folder is removed (no --keep)"
    assert not (tmp_path / ".ecrm" / "ecrm.env").exists()


def analysts_query_while_it_serves(cwd: Path, env: dict[str, str], printed: str) -> None:
    """The demo prints the ECRM_* lines, and the commands run where it was started reach it:
    `ecrm sql` and `ecrm rules backtest` answer from the ClickHouse it holds."""
    assert re.search(r"ECRM_CLICKHOUSE_URL=chdb://\S+/clickhouse", printed)
    assert re.search(r"ECRM_REDIS_URL=redis://127.0.0.1:\d+", printed)

    def ecrm(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ecrm", *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "important_value" in ecrm("sql", "gmv_by_segment")
    rules = Path(__file__).resolve().parents[2] / "rules" / "example.yaml"
    assert "abandoned-cart" in ecrm("rules", "backtest", str(rules), "--since", "30d")
