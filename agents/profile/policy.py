"""The shop's RFM policy (agents/profile/fold.py) as the operator configured it."""

from __future__ import annotations

from agents.profile.fold import RfmPolicy
from streams.settings import Settings


def rfm_policy(settings: Settings) -> RfmPolicy:
    """The shop's RFM policy as the operator configured it (ECRM_RFM_WINDOW_DAYS, ...)."""
    return RfmPolicy(
        window_days=settings.rfm_window_days,
        r_high_days=settings.r_high_days,
        f_high_orders=settings.f_high_orders,
        m_high_amount=settings.m_high_amount,
    )
