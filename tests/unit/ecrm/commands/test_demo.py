"""`ecrm demo`'s options: the response model's chances, checked, and a help that prints."""

from __future__ import annotations

import argparse

import pytest

from ecrm.commands import demo


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ecrm")
    demo.add_parser(top.add_subparsers(dest="command"))
    return top


def test_the_help_prints_the_response_models_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["demo", "--help"])
    text = capsys.readouterr().out
    assert "--no-effect" in text and "20 percentage points" in text


def test_chances_are_between_0_and_1() -> None:
    args = parser().parse_args(["demo", "--comeback", "0.05", "--coupon-lift", "0.3"])
    assert (args.comeback, args.coupon_lift, args.no_effect) == (0.05, 0.3, False)
    with pytest.raises(SystemExit):
        parser().parse_args(["demo", "--coupon-lift", "1.5"])
    with pytest.raises(SystemExit):
        parser().parse_args(["demo", "--comeback", "often"])
