"""The rules in force in a running worker, re-read when the file changes (hot reload)."""

from __future__ import annotations

from agents.reloading_file import ReloadingFile
from schemas.errors import RulesError
from schemas.rules import RuleSet, load_rules


class RulesBook(ReloadingFile):
    """The rules in force, re-read when the file changes; a bad new file is refused."""

    what = "rules file"
    rules: RuleSet

    def _load(self, *, reloading: bool) -> None:
        if reloading and not self.path.read_text(encoding="utf-8").strip():
            # an empty file is most likely one being rewritten in place, not "no rules"
            raise RulesError("the file is empty (write `rules: []` to switch every rule off)")
        self.rules = load_rules(self.path)

    def _loaded(self) -> str:
        return f": {len(self.rules.rules)} rules"
