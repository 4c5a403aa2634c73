"""Reconciliation: partner reports against the ledger, and the ledger integrity proof."""
