"""ECRM_MEMBERSHIP_FILE: the shipped programme unless told; empty means no programme at all,
and another process started with `as_env()` is told the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import EXAMPLE_MEMBERSHIP, Settings


def test_the_shipped_programme_is_the_default() -> None:
    assert Settings().membership_file == EXAMPLE_MEMBERSHIP


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_setting_is_no_programme(monkeypatch: pytest.MonkeyPatch, empty: str) -> None:
    monkeypatch.setenv("ECRM_MEMBERSHIP_FILE", empty)
    assert Settings().membership_file is None


def test_no_programme_is_passed_on_to_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    env = Settings(membership_file=None).as_env()
    assert env["ECRM_MEMBERSHIP_FILE"] == ""
    monkeypatch.setenv("ECRM_MEMBERSHIP_FILE", env["ECRM_MEMBERSHIP_FILE"])
    assert Settings().membership_file is None


def test_a_file_is_passed_on_as_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    env = Settings(membership_file=Path("my/programme.yaml")).as_env()
    monkeypatch.setenv("ECRM_MEMBERSHIP_FILE", env["ECRM_MEMBERSHIP_FILE"])
    assert Settings().membership_file == Path("my/programme.yaml")
