"""The parsers of `coalition settle ...` and `coalition keys signing ...` (handlers:
settlement/commands.py). Light on purpose: building them loads no settlement code."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from coalition.reports.period import PERIOD_HELP, period_argument
from coalition.settlement.key_files import (
    DEFAULT_SIGNING_KEY_PATH,
    SIGNING_KEY_ENVIRONMENT_VARIABLE,
)

DatabaseOption = Callable[[argparse.ArgumentParser], None]


def _add_signing_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--signing-key",
        default=None,
        metavar="FILE",
        help=f"private signing key file (default: ${SIGNING_KEY_ENVIRONMENT_VARIABLE}, "
        f"else {DEFAULT_SIGNING_KEY_PATH})",
    )


def add_settle_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], database: DatabaseOption
) -> None:
    settle = commands.add_parser("settle", help="signed settlement statements")
    settle_commands = settle.add_subparsers(dest="settle_command", required=True)
    run = settle_commands.add_parser("run", help="settle a period (idempotent)")
    run.add_argument(
        "--period",
        required=True,
        type=period_argument,
        help=PERIOD_HELP + "; settles everything unsettled committed before its end",
    )
    run.add_argument("--partner", default=None, help="settle this partner only")
    _add_signing_key_option(run)
    database(run)
    summary = settle_commands.add_parser(
        "summary", help="the group's totals per currency of a settled period (and its HTML)"
    )
    summary.add_argument("--period", required=True, type=period_argument, help=PERIOD_HELP)
    summary.add_argument(
        "--out", default=None, type=Path, metavar="DIR", help="also write the HTML and CSV here"
    )
    database(summary)
    export_command = settle_commands.add_parser(
        "export", help="write a statement (signed JSON, entries, readable HTML) to DIR"
    )
    export_command.add_argument("statement_id", metavar="STATEMENT_ID")
    export_command.add_argument("--out", required=True, type=Path, metavar="DIR")
    database(export_command)
    verify_command = settle_commands.add_parser("verify", help="verify an exported statement")
    verify_command.add_argument("directory", type=Path, metavar="DIR")
    verify_command.add_argument("--public-key", required=True, type=Path, metavar="FILE")
    verify_command.add_argument("--previous", default=None, type=Path, metavar="DIR")
    manifest = verify_command.add_mutually_exclusive_group()
    manifest.add_argument(
        "--manifest",
        default=None,
        type=Path,
        metavar="FILE",
        help="the partner's manifest (partners/<id>.toml): check prices, currency, the rate "
        "version in force and the acknowledgement key against it",
    )
    manifest.add_argument(
        "--partners",
        default=None,
        type=Path,
        metavar="DIR",
        help="a directory of manifests; the statement's partner's <id>.toml is used",
    )


def add_signing_parser(
    keys_commands: argparse._SubParsersAction[argparse.ArgumentParser], database: DatabaseOption
) -> None:
    signing_parser = keys_commands.add_parser("signing", help="statement signing keys")
    signing_commands = signing_parser.add_subparsers(dest="signing_command", required=True)
    for name, help_text in (
        ("generate", "create the first signing key (file mode 0600) and publish it"),
        ("rotate", "replace the signing key; the old public key stays published, retired"),
        ("list", "every published signing key with its validity range"),
    ):
        command = signing_commands.add_parser(name, help=help_text)
        if name != "list":
            _add_signing_key_option(command)
        database(command)
