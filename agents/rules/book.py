"""The rules in force in a running worker, re-read when the file changes (hot reload)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from schemas.errors import RulesError
from schemas.rules import RuleSet, load_rules

log = logging.getLogger(__name__)


class RulesBook:
    """The rules in force, re-read when the file changes; a bad new file is refused."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rules: RuleSet = load_rules(self.path)
        self._digest = self._read_digest()

    def _read_digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def reload_if_changed(self) -> bool:
        """True when new rules took effect. An invalid file leaves the old rules in force."""
        try:
            digest = self._read_digest()
        except OSError as exc:
            log.error("rules file %s unreadable (%s); keeping the rules in force", self.path, exc)
            return False
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            if not self.path.read_text(encoding="utf-8").strip():
                # an empty file is most likely one being rewritten in place, not "no rules"
                raise RulesError("the file is empty (write `rules: []` to switch every rule off)")
            self.rules = load_rules(self.path)
        except RulesError as exc:
            log.error("rules file %s refused, the previous rules stay in force: %s", self.path, exc)
            return False
        except (ValueError, ArithmeticError, TypeError, RecursionError):
            # whatever slipped past validation must not take the running rules down with it
            log.exception("rules file %s refused, the previous rules stay in force", self.path)
            return False
        log.warning("rules file %s reloaded: %d rules", self.path, len(self.rules.rules))
        return True
