"""State this process wrote lately, by its stored bytes: what did not change since is not
decoded again.

The worker reads every customer it steps from Redis and validates the JSON into pydantic
models (a profile: ~25 µs of CPU, a rule state ~10 µs, a member state ~12 µs) — and what it
reads back is, almost always, exactly the bytes it wrote itself one batch earlier. So the
encoder remembers the object it encoded under the bytes it produced, and a decoder handed
the very same bytes takes that object instead of validating them again. The bytes are the
key: bytes written by anyone else (another worker after a rebalance, an older version, a
repair by hand) or by a unit that never committed simply are not found, and are decoded
as before. Nothing can be served stale as long as an object is not changed after it was
encoded — which is how the callers use them (the keeper encodes a customer at the end of
its step, and the step changes only what it read).

Two kinds of state:
- `handed_over=True` (profiles, member states: the step changes them in place): a hit
  hands the object over and forgets it, so the same bytes decoded twice give two objects
  (the second one validated);
- `handed_over=False` (rule states: the engine never changes a state it was given, it
  changes a copy — `CustomerRuleState.copied`): a hit is shared and stays.

At most `kept` objects are remembered (the oldest goes first): the worker's memory stays
bounded whatever the number of customers.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

#: objects remembered per kind of state: a profile of the typical customer (~2 KB stored)
#: is ~12 KB of Python objects, so ~60 MB of profiles at most; the customers a worker steps
#: again soonest (the busy ones, and every timer's customer) are the ones still here
KEPT = 4096


class Written(Generic[T]):
    """Objects by the bytes they were encoded to (see the module's docstring)."""

    def __init__(self, *, handed_over: bool, kept: int = KEPT) -> None:
        self.handed_over = handed_over
        self.kept = kept
        self._by_bytes: dict[bytes, T] = {}

    def remember(self, raw: bytes, value: T) -> bytes:
        """`raw` is what `value` was encoded to; returns `raw`."""
        known = self._by_bytes
        known.pop(raw, None)
        known[raw] = value
        if len(known) > self.kept:
            del known[next(iter(known))]
        return raw

    def take(self, raw: bytes | str) -> T | None:
        """The object encoded to `raw`, if this process encoded it lately."""
        if not isinstance(raw, bytes):
            return None
        if self.handed_over:
            return self._by_bytes.pop(raw, None)
        return self._by_bytes.get(raw)

    def clear(self) -> None:
        self._by_bytes.clear()


__all__ = ["KEPT", "Written"]
