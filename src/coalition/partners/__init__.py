"""Partners: manifests, the catalogue of partners and rate versions, and API keys."""
