"""Movements as the rows ClickHouse keeps (`points_ledger`, `tag_changes`, `level_changes`)
and the messages `ecrm.member-changes` carries."""

from __future__ import annotations

from typing import Any

from agents.membership.state import POINTS_KINDS, Movement


def table_of(move: Movement) -> str:
    if move.kind in POINTS_KINDS:
        return "points_ledger"
    return "level_changes" if move.kind == "level_changed" else "tag_changes"


def movement_row(move: Movement) -> dict[str, Any]:
    """The row of one movement, for the table `table_of` names."""
    base = {"movement_id": move.movement_id, "customer_id": move.customer_id, "at": move.at}
    if move.kind in POINTS_KINDS:
        return base | {
            "kind": move.kind,
            "points": move.points,
            "balance": move.balance or 0,
            "lot": move.lot,
            "source": move.source,
            "reason": move.reason,
            "pending": int(move.pending),
            "expires_at": move.expires_at,
            "level": move.level or "",
        }
    if move.kind == "level_changed":
        return base | {
            "from_level": move.level_from or "",
            "to_level": move.level_to or "",
            "reason": move.reason,
        }
    return base | {
        "tag": move.tag or "",
        "op": "added" if move.kind == "tag_added" else "removed",
        "source": move.tag_source or "",
    }


def rows_by_table(moves: list[Movement]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for move in moves:
        out.setdefault(table_of(move), []).append(movement_row(move))
    return out
