"""A batch that raises is split until the event that raises is alone; that one is dead-lettered.

One odd event must not stop the worker, nor take its batch down with it. Applying a batch
is one Redis unit; when it raises, nothing of it was committed. Its halves are then applied
as units of their own, first half first, each split again if it raises, down to a single
event, which goes to the dead-letter topic with the exception instead of being applied.

Order is what makes this exactly once. A source partition's watermark is one number — the
last offset applied — so the parts must commit in offset order: a half applied before the
one in front of it would mark the front half applied without applying it. Halves of a batch
in consumption order hold each partition's offsets in order, and they are committed left to
right; the dead-lettered event advances its partition's watermark in the same unit that
records its dead letter. A worker killed anywhere in a split restarts at the watermark: what
was committed is skipped by offset, the rest is split again the same way.

    poisoned = await apply_or_split(items, apply=apply_unit, dead_letter=dead_letter_unit)

`apply` is expected to deal with outages and conflicts itself (wait and redo): whatever it
lets out is taken as the batch's fault.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest reason put in a dead letter (an exception can carry a whole payload).
REASON_MAX = 500


def reason(exc: BaseException) -> str:
    """`Type: message`, one line, at most REASON_MAX characters."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


async def apply_or_split(
    items: Sequence[T],
    apply: Callable[[Sequence[T]], Awaitable[None]],
    dead_letter: Callable[[T, Exception], Awaitable[None]],
) -> list[T]:
    """Apply `items` in one go, or in parts when that raises; returns what was dead-lettered."""
    poisoned: list[T] = []
    await _apply(list(items), apply, dead_letter, poisoned, top=True)
    return poisoned


async def _apply(
    items: list[T],
    apply: Callable[[Sequence[T]], Awaitable[None]],
    dead_letter: Callable[[T, Exception], Awaitable[None]],
    poisoned: list[T],
    top: bool = False,
) -> None:
    if not items:
        return
    try:
        await apply(items)
        return
    except Exception as exc:  # noqa: BLE001 - the split boundary: the batch's fault, not ours
        if len(items) == 1:
            await dead_letter(items[0], exc)
            poisoned.append(items[0])
            return
        if top:
            log.warning(
                "a batch of %d events raised %s; splitting it to find the event",
                len(items),
                reason(exc),
            )
    middle = len(items) // 2
    await _apply(items[:middle], apply, dead_letter, poisoned)
    await _apply(items[middle:], apply, dead_letter, poisoned)
