"""Membership: the points ledger of lots, levels with terms, rule and manual tags (pure)."""
