"""The quixstreams peer's side in `ecrm bench`: its own venv, built once and cached, and a run
of ecrm/dev/quix_peer.py from it over the bench's topics.

quixstreams 3.28 pins pydantic below 2.14 and ecrm is past it, so the peer cannot share ecrm's
environment: `ensure_venv` makes one with `python -m venv` and pip (about 15 s of CPU, a few
minutes on a busy machine with a cold pip cache) under `~/.cache/ecrm-bench/quix-venv`
($XDG_CACHE_HOME respected), and marks it complete only at the end, so an interrupted build is
started again rather than used.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: What the peer is measured with (the issue's measurement used 3.28).
QUIX_SPEC = "quixstreams==3.28.*"
PEER_SCRIPT = Path(__file__).with_name("quix_peer.py")
#: the storefront topics the bench's traffic fills, and the peer reads
PEER_KINDS = ("orders", "cart", "favorites", "browse")


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ecrm-bench" / "quix-venv"


def _stamp(venv: Path) -> Path:
    return venv / "ecrm-bench-ready"


def cached(venv: Path | None = None) -> bool:
    """The venv is built, for this QUIX_SPEC."""
    stamp = _stamp(venv or venv_dir())
    return stamp.exists() and stamp.read_text().strip() == QUIX_SPEC


def ensure_venv(say: Callable[[str], None], venv: Path | None = None) -> Path:
    """The peer's Python, building its venv first if it is not cached."""
    venv = venv or venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "quix-venv.lock", "wb") as lock:  # two benches build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cached(venv):
            say(f"  building the quixstreams peer's venv ({QUIX_SPEC}) in {venv} (once)")
            shutil.rmtree(venv, ignore_errors=True)
            build_log = venv.parent / "quix-venv-build.log"
            with open(build_log, "wb") as out:
                for step in (
                    [sys.executable, "-m", "venv", str(venv)],
                    [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", QUIX_SPEC],
                ):
                    if subprocess.run(step, stdout=out, stderr=out, check=False).returncode:  # noqa: S603 - our own command
                        raise RuntimeError(
                            f"building the quixstreams peer's venv failed: {' '.join(step)}; "
                            f"log: {build_log}"
                        )
            _stamp(venv).write_text(QUIX_SPEC)
    return venv / "bin" / "python"


@dataclass(frozen=True)
class PeerRun:
    events_per_s: float
    cpu_s_per_event: float
    #: events folded (the rest were redeliveries, dropped by the dedupe)
    new_events: int


def run_peer(
    python: Path,
    *,
    bootstrap: str,
    topics: list[str],
    group: str,
    events: int,
    state_dir: Path,
    exactly_once: bool,
    log_path: Path,
    timeout: float = 1800,
) -> PeerRun:
    """The peer over `events` messages of `topics`, read from the start by a new group."""
    command = [
        str(python),
        str(PEER_SCRIPT),
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--events",
        str(events),
        "--state-dir",
        str(state_dir),
        *(["--exactly-once"] if exactly_once else []),
        *topics,
    ]
    with open(log_path, "wb") as log:
        done = subprocess.run(  # noqa: S603 - our own script, argv built here
            command, stdout=subprocess.PIPE, stderr=log, timeout=timeout, check=False
        )
    lines = done.stdout.decode().strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0 or "error" in result:
        raise RuntimeError(
            f"the quixstreams peer failed ({result.get('error', f'exit {done.returncode}')}); "
            f"log: {log_path}"
        )
    return PeerRun(result["events_per_s"], result["cpu_s_per_event"], result["new_events"])
