"""The golden replay (ecrm/dev/golden.py): a fixed generated history through the customer
step gives exactly what it gave when the fixture was written — the final profiles, rule and
member states, decisions, action ids, member movements and ClickHouse rows. A speed-up that
changes any of them changed behaviour. (`python -m ecrm.dev.golden` writes the fixture again,
for a change of behaviour that is meant.)"""

from __future__ import annotations

import orjson
import pytest

from ecrm.dev.golden import FIXTURE, SAMPLED, digests, golden_run, history


@pytest.fixture(scope="module")
def messages():  # type: ignore[no-untyped-def]
    return history()


@pytest.fixture(scope="module")
def golden():  # type: ignore[no-untyped-def]
    return orjson.loads(FIXTURE.read_bytes())


@pytest.mark.parametrize(("name", "with_rules"), [("no_rules", False), ("shipped", True)])
def test_the_history_replays_to_the_same_outcome(messages, golden, name, with_rules):  # type: ignore[no-untyped-def]
    outcome = golden_run(with_rules=with_rules, messages=messages)
    expected = golden[name]
    sample = {c: [orjson.loads(line) for line in outcome[c][:2]] for c in SAMPLED if c in outcome}
    assert sample == expected["sample"]
    got = digests(outcome)
    differ = sorted(
        c for c in {*got, *expected["digests"]} if got.get(c) != expected["digests"].get(c)
    )
    assert not differ, f"the golden replay changed in: {differ}"


def test_the_history_exercises_what_it_guards(golden):  # type: ignore[no-untyped-def]
    """The fixture is worth comparing: rules fired, members moved, messages were refused."""
    counts = {c: int(d.split(":")[0]) for c, d in golden["shipped"]["digests"].items()}
    for category in ("actions", "decisions", "movements", "segment_changes", "refused", "members"):
        assert counts[category] > 10, category


def test_advance_leaves_the_wake_up_of_the_customer_as_it_leaves_them(messages):  # type: ignore[no-untyped-def]
    """`advance` (the worker's sweep) hands on the wake-up its last look worked out instead of
    working it out again: it is the one the customer it leaves has."""
    from datetime import timedelta

    from agents.customer_step import StepContext, advance, wake_of
    from agents.profile.fold import RfmPolicy
    from agents.rules.contact_policy import BudgetBook
    from ecrm.dev.golden import GoldenRun, shipped

    rules, programme = shipped()
    run = GoldenRun(StepContext(RfmPolicy(), rules, BudgetBook(), programme=programme))
    for offset, message in enumerate(messages[:1500]):
        run.feed(message, offset)
    assert run.clock is not None
    checked = 0
    for cid in sorted(run.profiles)[:60]:
        for days, inclusive in ((0, True), (3, False), (40, True), (400, True)):
            step = advance(
                run._read(cid), run.clock + timedelta(days=days), run.ctx, inclusive=inclusive
            )
            assert step.wake == wake_of(step.customer, run.ctx)
            checked += 1
    assert checked == 240
