"""`coalition bench`: the hub against PostgreSQL's own limit, side by side (docs/benchmarks.md)."""
