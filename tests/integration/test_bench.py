"""`ecrm bench --quick` runs end to end and reports every figure beside its peer.

A smoke check of the benchmark's plumbing and the sanity of what it prints, never a speed
threshold: these machines are too noisy for that (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_bench_quick_measures_every_figure_against_its_peer(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "ecrm", "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())

    t = results["throughput"]
    assert t["raw_events_per_s"] > 0 and t["ecrm_events_per_s"] > 0
    assert t["ratio"] == pytest.approx(t["ecrm_events_per_s"] / t["raw_events_per_s"], rel=0.01)
    assert t["worker_rss_bytes"] > 0
    assert t["raw_cpu_us_per_event"] > 0 and t["ecrm_cpu_us_per_event"] > 0
    assert t["cpu_ratio"] == pytest.approx(
        t["raw_cpu_us_per_event"] / t["ecrm_cpu_us_per_event"], rel=0.01
    )
    consumers = t["consumers"]
    assert {"raw", "ecrm_bare", "ecrm"} <= set(consumers)
    assert all(c["events_per_s"] > 0 and c["cpu_us_per_event"] > 0 for c in consumers.values())
    assert consumers["ecrm"]["cpu_us_per_event"] == t["ecrm_cpu_us_per_event"]
    if "quixstreams" in consumers:  # its venv was cached (--quick does not build it)
        assert t["cpu_vs_quixstreams"]["ecrm"] == pytest.approx(
            consumers["ecrm"]["cpu_us_per_event"] / consumers["quixstreams"]["cpu_us_per_event"],
            abs=0.01,
        )
    else:
        assert "venv" in t["quixstreams_skipped"] and "quixstreams peer skipped" in run.stdout
    assert results["memory"]["profiles"] > 1000
    assert 100 < results["memory"]["redis_bytes_per_profile_median"] < 100_000
    assert results["timer_lateness_s"]["n"] > 0 and results["timer_lateness_s"]["missing"] == 0
    assert results["timer_lateness_s"]["p50"] >= 0  # an action never comes before its deadline
    assert results["freshness_s"]["n"] > 0 and results["freshness_s"]["missing"] == 0
    assert results["sink"]["raw_rows_per_s"] > 0 and results["sink"]["ecrm_rows_per_s"] > 0
    scale = results["scale_out"]
    assert scale["profiles_identical"] is True
    runs = ("one worker", "two workers", "four workers")
    assert {scale[k]["applied"] for k in runs} == {scale["one worker"]["applied"]} != {0}
    assert all(scale[k]["events_per_cpu_s"] > 0 for k in runs)
    assert scale["four workers"]["vs_one"] == pytest.approx(
        scale["four workers"]["events_per_s"] / scale["one worker"]["events_per_s"], abs=0.01
    )
    ingest = results["ingest"]
    assert ingest["api_events_per_s"] > 0 and ingest["kafka_events_per_s"] > 0
    assert ingest["ratio"] == pytest.approx(
        ingest["api_events_per_s"] / ingest["kafka_events_per_s"], rel=0.01
    )
    assert 0 < ingest["api_request_p50_ms"] <= ingest["api_request_p99_ms"]
    assert "throughput" in run.stdout and "ratio" in run.stdout
