"""Group finance and programme reports (docs/reports.md): set-based SQL over the ledger,
written as CSV, JSON and one self-contained HTML page with inline SVG charts."""
