"""The sweep's slice size (agents/profile/sweep.py): aimed at ~50 ms from the time per
customer the last slice took, bounded, cautious upwards and quick downwards."""

from __future__ import annotations

from agents.profile.sweep import SLICE_AIM_S, SliceSize


def test_a_quick_slice_lets_the_next_grow_at_most_twofold() -> None:
    slices = SliceSize(size=32)
    slices.measured(32, 0.001)  # 31 µs a customer: ~1,600 would fit in 50 ms
    assert slices.size == 64
    slices.measured(64, 0.002)
    assert slices.size == 128


def test_a_slow_slice_shrinks_the_next_to_what_fits_in_the_aim_at_once() -> None:
    slices = SliceSize(size=200)
    slices.measured(200, 0.4)  # 2 ms a customer
    assert slices.size == int(SLICE_AIM_S / 0.002)


def test_the_size_stays_within_its_bounds() -> None:
    slices = SliceSize(size=4, least=2, most=100)
    slices.measured(4, 10.0)  # a customer that takes seconds: still one slice of the least
    assert slices.size == 2
    for _ in range(20):
        slices.measured(slices.size, 0.0)
    assert slices.size == 100


def test_a_fixed_size_never_moves() -> None:
    slices = SliceSize.fixed(7)
    slices.measured(7, 5.0)
    slices.measured(7, 0.0)
    assert slices.size == 7
