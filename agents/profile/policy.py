"""The shop's RFM policy (agents/profile/fold.py) as the operator configured it."""

from __future__ import annotations

from agents.profile.fold import RfmPolicy
from streams.settings import Settings


def rfm_policy(settings: Settings) -> RfmPolicy:
    """The shop's RFM policy as the operator configured it (ECRM_RFM_WINDOW_DAYS, ...)."""
    return RfmPolicy.of(settings)
