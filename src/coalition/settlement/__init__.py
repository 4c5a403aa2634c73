"""Settlement: signed, chained per-partner statements that partners verify offline.

The format is specified in docs/settlement.md; `format.py`, `canonical.py`, `merkle.py` and
`signing.py` hold everything a verifier needs and do no I/O beyond reading key files.
"""
