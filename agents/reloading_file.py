"""A file a running worker keeps in force and re-reads when it changes (hot reload): the
marketers' rules (agents/rules/book.py) and the membership programme
(agents/membership/book.py). A bad new file is refused and the one in force stays."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from schemas.errors import RulesError

log = logging.getLogger(__name__)


class ReloadingFile:
    """The digest of the file last taken, and the reload that keeps it only when valid.
    A subclass loads its content (`_load`, raising RulesError when invalid) and keeps it."""

    #: how logs name the file ("rules file", "membership file")
    what = "file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._load(reloading=False)
        self._digest = self._read_digest()

    def _load(self, *, reloading: bool) -> None:
        raise NotImplementedError

    def _loaded(self) -> str:
        """What was loaded, for the log line of a reload."""
        return ""

    def _read_digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def reload_if_changed(self) -> bool:
        """True when the file changed and its new content took effect."""
        try:
            digest = self._read_digest()
        except OSError as exc:
            log.error("%s %s unreadable (%s); keeping the one in force", self.what, self.path, exc)
            return False
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            self._load(reloading=True)
        except RulesError as exc:
            log.error("%s %s refused, the one in force stays: %s", self.what, self.path, exc)
            return False
        except (ValueError, ArithmeticError, TypeError, RecursionError):
            # whatever slipped past validation must not take the running worker down with it
            log.exception("%s %s refused, the one in force stays", self.what, self.path)
            return False
        log.warning("%s %s reloaded%s", self.what, self.path, self._loaded())
        return True
