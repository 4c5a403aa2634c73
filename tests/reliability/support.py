"""Reliability helpers: the suite's size knob (and the row-count snapshot, for its tests).

COALITION_RELIABILITY_SOAK=1 turns the quick CI run into the documented longer soak: more
hypothesis examples per RPC, more clients and operations in the bank and fault tests.
"""

from __future__ import annotations

import os

from tests.integration.ledger_checks import row_counts

__all__ = ["SOAK", "row_counts", "scaled"]

SOAK = os.environ.get("COALITION_RELIABILITY_SOAK", "") not in ("", "0")


def scaled(quick: int, soak: int) -> int:
    return soak if SOAK else quick
