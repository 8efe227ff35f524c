"""Programmes and instants the membership tests share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.membership import Programme, parse_programme

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

LADDER = """
levels:
  metric: spend
  window: 365d
  term: 365d
  ladder:
    - {id: member, upgrade: 0}
    - {id: silver, upgrade: 1000, keep: 800, benefits: {points_multiplier: 1.5}}
    - {id: gold, upgrade: 5000, keep: 4000, benefits: {points_multiplier: 2}}
"""


def programme(points: str = "", levels: str = LADDER, tags: str = "") -> Programme:
    """A programme with these `points:` settings (YAML, indented under points:)."""
    text = levels
    if points:
        text += "points:\n" + "".join(f"  {line}\n" for line in points.strip().splitlines())
    if tags:
        text += "tags:\n" + "".join(f"  {line}\n" for line in tags.strip().splitlines())
    return parse_programme(text)


ROLLING = programme("pending: 15d\nexpiry: {mode: rolling, after: 365d}")
