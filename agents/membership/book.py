"""The membership programme in force in a running worker, re-read when the file changes."""

from __future__ import annotations

from agents.reloading_file import ReloadingFile
from schemas.membership import Programme, load_programme


class ProgrammeBook(ReloadingFile):
    """The programme in force; a bad new file is refused and the old one stays."""

    what = "membership file"
    programme: Programme

    def _load(self, *, reloading: bool) -> None:
        self.programme = load_programme(self.path)
