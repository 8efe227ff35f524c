"""ECRM_DATA_DIR/ecrm.env: written by the running stack, read while its owner lives (or it was
kept), removed only by its owner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ecrm.running import (
    owned_by_another,
    read_running,
    remove_running,
    stack_file,
    write_kept,
    write_running,
)

ENV = {"ECRM_REDIS_URL": "redis://127.0.0.1:16379/0", "ECRM_CLICKHOUSE_URL": "chdb:///x/ch"}


def test_the_running_stacks_settings_read_back(tmp_path: Path) -> None:
    write_running(tmp_path, ENV, "ecrm up")
    found = read_running(tmp_path)
    assert found is not None
    assert (found.env, found.pid, found.kept) == (ENV, os.getpid(), False)
    assert not owned_by_another(tmp_path)  # it is ours


def test_a_file_whose_owner_died_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    stack_file(tmp_path).write_text(f"# pid {dead.stdout.strip()}\nECRM_REDIS_URL=redis://x\n")
    assert read_running(tmp_path) is None
    assert not owned_by_another(tmp_path)


def test_another_live_owner_is_left_alone(tmp_path: Path) -> None:
    stack_file(tmp_path).write_text(f"# pid {os.getppid()}\nECRM_REDIS_URL=redis://x\n")
    assert owned_by_another(tmp_path)
    remove_running(tmp_path)
    assert stack_file(tmp_path).exists()


def test_the_owner_removes_its_file(tmp_path: Path) -> None:
    write_running(tmp_path, ENV, "ecrm up")
    remove_running(tmp_path)
    assert read_running(tmp_path) is None and not stack_file(tmp_path).exists()


def test_a_kept_demo_is_read_without_an_owner(tmp_path: Path) -> None:
    write_kept(tmp_path, {"ECRM_CLICKHOUSE_URL": "chdb:///tmp/demo/clickhouse"}, "kept")
    found = read_running(tmp_path)
    assert found is not None and found.kept and found.pid is None
    assert found.env == {"ECRM_CLICKHOUSE_URL": "chdb:///tmp/demo/clickhouse"}
    assert not owned_by_another(tmp_path)


def test_only_ecrm_settings_are_read(tmp_path: Path) -> None:
    stack_file(tmp_path).write_text("# kept\nPATH=/evil\nECRM_APP_ID=a=b\n")
    found = read_running(tmp_path)
    assert found is not None and found.env == {"ECRM_APP_ID": "a=b"}
