"""Where the hub's settlement signing key is found: an option, else the environment, else the
default path. Apart from signing.py so that the command line's parsers can name them without
loading the cryptography."""

from __future__ import annotations

from pathlib import Path

SIGNING_KEY_ENVIRONMENT_VARIABLE = "COALITION_SIGNING_KEY"
DEFAULT_SIGNING_KEY_PATH = Path("keys") / "settlement-signing-key.pem"
