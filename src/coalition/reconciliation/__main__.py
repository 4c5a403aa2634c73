"""`python -m coalition.reconciliation run|integrity ...`: the same handlers as
`coalition reconcile ...`, without loading the rest of the command line (used by the
benchmark so that it measures reconciliation alone)."""

from __future__ import annotations

import argparse
import os
import sys

from coalition.reconciliation.arguments import add_reconcile_parser
from coalition.reconciliation.commands import RECONCILE_COMMANDS
from coalition.settings import DATABASE_URL_ENVIRONMENT_VARIABLE, settings_from
from coalition.store.engine import create_database_engine


def _add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", dest="database_url", default=None)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m coalition.reconciliation")
    add_reconcile_parser(parser.add_subparsers(dest="command", required=True), _add_database_option)
    arguments = parser.parse_args(["reconcile", *sys.argv[1:]])
    database_url = settings_from(arguments, os.environ).database_url_given
    if not database_url:
        parser.error(f"give --db or set {DATABASE_URL_ENVIRONMENT_VARIABLE}")
    engine = create_database_engine(database_url)
    return RECONCILE_COMMANDS[f"reconcile {arguments.reconcile_command}"](engine, arguments)


if __name__ == "__main__":
    sys.exit(main())
