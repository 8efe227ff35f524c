"""The hot path alone, in microseconds of CPU per event: what the worker does for each event
besides talking to Kafka and Redis — decode the message, read the customer's stored state,
run the customer step (fold, re-rate, rules, membership), write the state back in its stored
form and build the ClickHouse rows — over the golden replay's kind of history.

    python -m ecrm.dev.step_bench                     # both configurations, 20k messages
    python -m ecrm.dev.step_bench --rules shipped --sessions 6000
    py-spy record -o step.svg -- python -m ecrm.dev.step_bench --rules shipped

`none`: no rules and no membership programme; `shipped`: rules/example.yaml and
rules/membership.yaml. docs/benchmarks.md ("Hot path") keeps the numbers.
"""

from __future__ import annotations

import argparse
import time

from agents.customer_step import StepContext
from agents.profile.fold import RfmPolicy
from agents.rules.contact_policy import BudgetBook
from ecrm.dev.golden import TAIL, GoldenRun, history, shipped


def measure(with_rules: bool, customers: int, sessions: int, repeat: int) -> tuple[int, float]:
    """(messages, best µs of CPU per message over `repeat` runs)."""
    messages = history(customers, sessions)
    best = float("inf")
    for _ in range(repeat):
        rules, programme = shipped() if with_rules else (None, None)
        run = GoldenRun(StepContext(RfmPolicy(), rules, BudgetBook(), programme=programme))
        started = time.process_time()
        for offset, message in enumerate(messages):
            run.feed(message, offset)
        if run.clock is not None:
            run.advance(run.clock + TAIL)
        best = min(best, time.process_time() - started)
    return len(messages), best / len(messages) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", choices=("none", "shipped", "both"), default="both")
    parser.add_argument("--customers", type=int, default=800)
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    configs = {"none": [False], "shipped": [True], "both": [False, True]}[args.rules]
    for with_rules in configs:
        n, us = measure(with_rules, args.customers, args.sessions, args.repeat)
        name = "shipped rules + membership" if with_rules else "no rules, no membership"
        print(f"{name:28} {n:7d} messages  {us:7.1f} µs CPU/message")


if __name__ == "__main__":
    main()
