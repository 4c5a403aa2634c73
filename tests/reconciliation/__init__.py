"""Reconciliation: partner reports, the integrity proof, scheduled jobs."""
