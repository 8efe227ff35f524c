"""Every rules and membership example of the Chinese guide (docs/zh/) is a whole file that
`ecrm rules check` / `ecrm membership check` accept: a marketer can copy any of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agents.rules.check import check_rules
from ecrm.commands import membership

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "zh"
PAGES = ["快速开始.md", "规则编写.md", "会员体系.md", "看板与效果评估.md"]
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
RULES_SECTIONS = {"policy", "rules"}
MEMBERSHIP_SECTIONS = {"timezone", "points", "levels", "tags"}


def examples() -> list[tuple[str, int, str]]:
    found = []
    for name in PAGES:
        for n, match in enumerate(YAML_BLOCK.finditer((GUIDE / name).read_text("utf-8")), 1):
            found.append((name, n, match.group(1)))
    return found


def test_the_guide_has_its_four_pages_and_examples_in_each_writing_guide() -> None:
    assert all((GUIDE / name).is_file() for name in PAGES)
    per_page = {name: sum(1 for page, _, _ in examples() if page == name) for name in PAGES}
    assert per_page["规则编写.md"] >= 8 and per_page["会员体系.md"] >= 3, per_page


@pytest.mark.parametrize(
    ("page", "n", "text"), examples(), ids=[f"{p}#{n}" for p, n, _ in examples()]
)
def test_each_example_passes_the_checker_of_its_kind(
    page: str, n: int, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sections = set(yaml.safe_load(text))
    path = tmp_path / "example.yaml"
    path.write_text(text, encoding="utf-8")
    if sections <= RULES_SECTIONS:
        code, message = check_rules(path)
        assert code == 0, message
    else:
        assert sections <= MEMBERSHIP_SECTIONS, f"neither a rules nor a membership file: {sections}"
        args = type("Args", (), {"file": path, "membership_command": "check"})()
        code = membership.run(args, settings=None)  # type: ignore[arg-type]
        assert code == 0, capsys.readouterr().err
