"""The sweep's slice size (agents/profile/sweep.py): aimed at ~50 ms from the time per
customer the last slice took, bounded, moving at most twofold a slice."""

from __future__ import annotations

from agents.profile.sweep import SLICE_AIM_S, SliceSize


def test_a_quick_slice_lets_the_next_grow_at_most_twofold() -> None:
    slices = SliceSize(size=32)
    slices.measured(32, 0.001)  # 31 µs a customer: ~1,600 would fit in 50 ms
    assert slices.size == 64
    slices.measured(64, 0.002)
    assert slices.size == 128


def test_a_slow_slice_halves_the_next_until_it_fits_in_the_aim() -> None:
    slices = SliceSize(size=200)
    slices.measured(200, 0.4)  # 2 ms a customer: 25 fit in 50 ms
    assert slices.size == 100
    slices.measured(100, 0.2)
    assert slices.size == 50
    slices.measured(50, 0.1)
    assert slices.size == int(SLICE_AIM_S / 0.002) == 25
    slices.measured(25, 0.05)
    assert slices.size == 25


def test_one_slice_slowed_by_something_else_only_halves_the_next() -> None:
    slices = SliceSize(size=40)
    slices.measured(3, 0.26)  # 3 customers, 260 ms: the event loop was busy elsewhere
    assert slices.size == 20


def test_the_size_stays_within_its_bounds() -> None:
    slices = SliceSize(size=4, least=2, most=100)
    for _ in range(3):
        slices.measured(slices.size, 10.0)  # customers that take seconds: the least it goes
    assert slices.size == 2
    for _ in range(20):
        slices.measured(slices.size, 0.0)
    assert slices.size == 100


def test_a_fixed_size_never_moves() -> None:
    slices = SliceSize.fixed(7)
    slices.measured(7, 5.0)
    slices.measured(7, 0.0)
    assert slices.size == 7
