"""Members, the partner accounts linked to them, and member profiles."""
