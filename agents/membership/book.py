"""The membership programme in force in a running worker, re-read when the file changes."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from schemas.errors import RulesError
from schemas.membership import Programme, load_programme

log = logging.getLogger(__name__)


class ProgrammeBook:
    """The programme in force; a bad new file is refused and the old one stays."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.programme: Programme = load_programme(self.path)
        self._digest = self._read_digest()

    def _read_digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def reload_if_changed(self) -> bool:
        """True when a new programme took effect."""
        try:
            digest = self._read_digest()
        except OSError as exc:
            log.error("membership file %s unreadable (%s); keeping the programme", self.path, exc)
            return False
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            self.programme = load_programme(self.path)
        except RulesError as exc:
            log.error(
                "membership file %s refused, the programme in force stays: %s", self.path, exc
            )
            return False
        except (ValueError, ArithmeticError, TypeError, RecursionError):
            log.exception("membership file %s refused, the programme in force stays", self.path)
            return False
        log.warning("membership file %s reloaded", self.path)
        return True
