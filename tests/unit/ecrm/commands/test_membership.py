"""`ecrm membership check`: a shop owner learns which field is wrong, and what the valid
programme says, before the worker runs it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ecrm.commands import membership
from streams.settings import EXAMPLE_MEMBERSHIP, Settings


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = membership.run(argparse.Namespace(membership_command="check", file=path), Settings())
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_shipped_programme_is_valid_and_described(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _check(EXAMPLE_MEMBERSHIP, capsys)
    assert code == 0
    assert "diamond (钻石): from 20000, keep 16000" in text
    assert "lapse at the end of the year 1 after the one earned" in text


def test_a_wrong_field_is_named_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "levels:\n  ladder:\n    - {id: member}\n    - {id: silver, upgrade: 1000, kep: 800}\n"
        "points: {refund: sometimes}\n",
        encoding="utf-8",
    )
    code, text = _check(path, capsys)
    assert code == 1
    assert 'field "levels.ladder[1].kep": unknown field (did you mean "keep"?)' in text
    assert 'field "points.refund"' in text and "within_balance" in text


def test_a_keep_threshold_above_the_upgrade_and_a_bad_multiplier_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "levels:\n  ladder:\n    - {id: member}\n"
        "    - {id: silver, upgrade: 1000, keep: 1200, benefits: {points_multiplier: -1}}\n",
        encoding="utf-8",
    )
    code, text = _check(path, capsys)
    assert code == 1 and "levels.ladder[1]" in text


def test_a_file_that_is_not_yaml_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("levels: [unclosed\n", encoding="utf-8")
    code, text = _check(path, capsys)
    assert code == 2 and "line" in text
    assert _check(tmp_path / "missing.yaml", capsys)[0] == 2
