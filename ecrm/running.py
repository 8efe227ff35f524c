"""The running stack's file, ``ECRM_DATA_DIR/ecrm.env``: how the other commands find it.

`ecrm up` and `ecrm demo` pick their ports (the documented ones, or free ones when those are
taken) and the demo its data folder, so they write the ECRM_* settings that reach them here
while they run, with their pid, and remove the file when they stop. `ecrm env` prints it;
every other command takes its values for the ECRM_* variables the environment does not set
(ecrm/cli.py), so `ecrm sql`, `ecrm profile` … in the same directory reach the running stack
with nothing exported. `ecrm demo --keep` leaves a file naming only the demo's ClickHouse,
marked kept, so `ecrm sql` finds the demo's data after it stopped.

Only ECRM_* lines and comments; a file whose owner died (SIGKILL, a crash) is ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "ecrm.env"
_PID = "# pid "
_KEPT = "# kept"


@dataclass(frozen=True)
class Running:
    """What a running (or kept) stack's file says."""

    path: Path
    env: dict[str, str]
    pid: int | None
    kept: bool


def stack_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def write_running(data_dir: Path, env: Mapping[str, str], what: str) -> Path:
    """Write the file for this process (`what` started it, e.g. "ecrm up")."""
    return _write(
        stack_file(data_dir),
        [f"# {what} is running; this file goes when it stops", f"{_PID}{os.getpid()}"],
        env,
    )


def write_kept(data_dir: Path, env: Mapping[str, str], what: str) -> Path:
    """Write a file that outlives this process: `what` kept its data (`ecrm demo --keep`)."""
    return _write(
        stack_file(data_dir),
        [f"# {what}; delete this file to use {data_dir}'s own data again", _KEPT],
        env,
    )


def remove_running(data_dir: Path) -> None:
    """Remove the file if this process wrote it (another one's is left alone)."""
    found = read_file(stack_file(data_dir))
    if found is not None and found.pid == os.getpid():
        found.path.unlink(missing_ok=True)


def read_running(data_dir: Path) -> Running | None:
    """The file in data_dir if its owner still runs (or it was kept), else None."""
    found = read_file(stack_file(data_dir))
    if found is None or not (found.kept or (found.pid is not None and _alive(found.pid))):
        return None
    return found


def owned_by_another(data_dir: Path) -> bool:
    """A live process other than this one wrote the file in data_dir."""
    found = read_running(data_dir)
    return found is not None and not found.kept and found.pid != os.getpid()


def read_file(path: Path) -> Running | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    env: dict[str, str] = {}
    pid, kept = None, False
    for line in text.splitlines():
        if line.startswith(_PID) and line.removeprefix(_PID).isdigit():
            pid = int(line.removeprefix(_PID))
        elif line.strip() == _KEPT:
            kept = True
        elif line.startswith("ECRM_") and "=" in line:
            name, _, value = line.partition("=")
            env[name] = value
    return Running(path, env, pid, kept)


def _write(path: Path, header: list[str], env: Mapping[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [*header, *(f"{name}={value}" for name, value in env.items() if "\n" not in value)]
    partial = path.with_name(path.name + ".partial")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    partial.replace(path)  # readers never see half a file
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the pid
        return False
    return True
