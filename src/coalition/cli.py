"""The `coalition` command: serve, migrate, sync partners, issue keys, run the demo.

Building the parser loads only the light `*arguments` modules; each command's handler imports
what it uses when it runs (`_deferred`), so `coalition --help` and a one-shot command do not
pay for gRPC, SQLAlchemy or the code of every other command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coalition.domain.errors import CoalitionError
from coalition.observability.arguments import add_serve_options
from coalition.partners.manifest import ManifestError
from coalition.programme.job_arguments import add_jobs_parser
from coalition.reconciliation.arguments import add_reconcile_parser
from coalition.reports.arguments import add_report_parser
from coalition.settings import (
    DATABASE_URL_ENVIRONMENT_VARIABLE,
    DEFAULT_DATABASE_URL,
    DEFAULT_GROUP_COMMIT,
    DEFAULT_LISTEN,
    GROUP_SIZE_MAX_BOUND,
    GROUP_WINDOW_MS_MAX,
    PROGRAMME_DIRECTORY_ENVIRONMENT_VARIABLE,
    Settings,
    settings_from,
)
from coalition.settlement import arguments as settle_arguments

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from coalition.partners.sync import SyncReport
    from coalition.programme.config import Programme

__all__ = ["DATABASE_URL_ENVIRONMENT_VARIABLE", "build_parser", "main"]


def _add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        dest="database_url",
        default=None,
        help=f"SQLAlchemy database URL (default: ${DATABASE_URL_ENVIRONMENT_VARIABLE}, "
        f"else {DEFAULT_DATABASE_URL})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coalition", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC hub")
    _add_database_option(serve)
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT to listen on")
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.add_argument(
        "--group-window-ms",
        type=float,
        default=DEFAULT_GROUP_COMMIT.window_ms,
        help="how long a queued earn or burn waits for others to share its transaction "
        f"(0 to {GROUP_WINDOW_MS_MAX:g}; default: none, a lone call never waits)",
    )
    serve.add_argument(
        "--group-size-max",
        type=int,
        default=DEFAULT_GROUP_COMMIT.size_max,
        help=f"most earns or burns in one transaction (1 to {GROUP_SIZE_MAX_BOUND}; "
        f"default {DEFAULT_GROUP_COMMIT.size_max})",
    )
    serve.add_argument("--partners", default=None, help="sync partner manifests from DIR first")
    serve.add_argument(
        "--signing-key",
        default=None,
        metavar="FILE",
        help="settlement signing key (default: $COALITION_SIGNING_KEY, else "
        "keys/settlement-signing-key.pem when present); refused if others can read it",
    )
    serve.add_argument(
        "--programme",
        default=None,
        help="tiers.toml and promotions.toml from DIR "
        f"(default: ${PROGRAMME_DIRECTORY_ENVIRONMENT_VARIABLE}, else none)",
    )
    add_serve_options(serve)
    serve.add_argument("--tls-cert", default=None, metavar="FILE", help="hub certificate (PEM)")
    serve.add_argument("--tls-key", default=None, metavar="FILE", help="hub private key (PEM)")
    serve.add_argument(
        "--client-ca",
        default=None,
        metavar="FILE",
        help="CA whose certificates clients must present (mutual TLS; all three TLS options)",
    )
    serve.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="requests per second per partner and hub process (default: unlimited)",
    )
    serve.add_argument(
        "--rate-limit-burst", type=int, default=None, help="token bucket size (default: the rate)"
    )
    serve.add_argument(
        "--jobs",
        action="store_true",
        help="run the scheduled jobs (holds, expire, tiers, integrity) in the hub, each under "
        "a database lease so that one process of many runs it; see `coalition jobs status`",
    )
    serve.add_argument(
        "--job-interval",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="with --jobs: run job NAME every SECONDS (defaults: holds 60, expire 3600, "
        "tiers and integrity 86400)",
    )

    database = commands.add_parser("db", help="database schema")
    database_commands = database.add_subparsers(dest="database_command", required=True)
    upgrade = database_commands.add_parser("upgrade", help="apply migrations up to the newest")
    _add_database_option(upgrade)

    partners = commands.add_parser("partners", help="partner manifests")
    partners_commands = partners.add_subparsers(dest="partners_command", required=True)
    sync = partners_commands.add_parser("sync", help="apply partners/<id>.toml manifests")
    sync.add_argument("directory")
    _add_database_option(sync)
    listing = partners_commands.add_parser("list", help="list partners and rate versions")
    _add_database_option(listing)
    sales = partners_commands.add_parser(
        "import-sales",
        help="record partners' daily total sales from a CSV of "
        "partner_id,sales_date,amount_minor,currency (docs/reports.md)",
    )
    sales.add_argument("file", metavar="FILE")
    _add_database_option(sales)

    promotions = commands.add_parser("promotions", help="promotions (docs/promotions.md)")
    promotions_commands = promotions.add_subparsers(dest="promotions_command", required=True)
    seed = promotions_commands.add_parser(
        "seed", help="write DIR/promotions.toml's promotions that the database lacks"
    )
    seed.add_argument("directory", metavar="DIR")
    _add_database_option(seed)

    keys = commands.add_parser("keys", help="API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    issue = keys_commands.add_parser("issue", help="issue an API key; it is printed once")
    issue.add_argument("principal_id", metavar="PARTNER_ID")
    issue.add_argument(
        "--role", required=True, choices=["partner", "merchant", "finance", "admin", "operations"]
    )
    _add_database_option(issue)
    revoke = keys_commands.add_parser("revoke", help="revoke an API key by its key id")
    revoke.add_argument("key_id")
    _add_database_option(revoke)
    settle_arguments.add_signing_parser(keys_commands, _add_database_option)
    settle_arguments.add_settle_parser(commands, _add_database_option)

    demo_command = commands.add_parser("demo", help="the whole story, through real gRPC calls")
    demo_command.add_argument(
        "--db",
        dest="database_url",
        default=None,
        help="keep the demo's ledger in this database (default: a temporary SQLite file)",
    )
    demo_command.add_argument(
        "--partners",
        default=None,
        type=Path,
        help="partner manifests DIR (default: the demo's own, shipped with the package)",
    )
    demo_command.add_argument(
        "--out",
        default=None,
        type=Path,
        metavar="DIR",
        help="write statements, keys, reconciliation and report here (default: a new "
        "temporary directory, kept and printed)",
    )
    add_jobs_parser(commands, _add_database_option)
    add_reconcile_parser(commands, _add_database_option)
    # The bench's options are defaults of its harness: its parser is built when it runs.
    commands.add_parser(
        "bench", help="the hub against a pgbench baseline on the same PostgreSQL", add_help=False
    )
    add_report_parser(commands, _add_database_option)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments, unparsed = parser.parse_known_args(argv)
    if arguments.command == "bench":
        arguments.bench_arguments = unparsed  # parsed by the bench's own parser (`_bench`)
    elif unparsed:
        parser.error(f"unrecognized arguments: {' '.join(unparsed)}")
    # The server logs its life; one-shot commands speak only through their output and errors.
    logging.basicConfig(
        level=logging.INFO if arguments.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    handler = COMMANDS[_command_path(arguments)]
    settings: Settings | None = None
    try:
        # The one read of the environment: everything below is handed `settings`.
        settings = settings_from(arguments, os.environ)
        return handler(arguments, settings)
    except CoalitionError as error:
        print(f"error: {error.reason}: {error.message}", file=sys.stderr)
        return 1
    except (ManifestError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        # Any command may find the database down: one line for the operator, not a traceback.
        if settings is None or not _is_database_unavailable(error):
            raise
        print(f"error: DATABASE_UNAVAILABLE: {_unreachable(settings, error)}", file=sys.stderr)
        return 1
    finally:
        engine = vars(arguments).pop(ENGINE_ATTRIBUTE, None)
        if engine is not None:
            engine.dispose()  # close pooled connections now, even when called in-process


def _is_database_unavailable(error: Exception) -> bool:
    """SQLAlchemy's "cannot connect" errors; a command that never loaded SQLAlchemy raised none."""
    exceptions = sys.modules.get("sqlalchemy.exc")
    return exceptions is not None and isinstance(
        error, (exceptions.OperationalError, exceptions.InterfaceError)
    )


def _unreachable(settings: Settings, error: Any) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url).render_as_string(hide_password=True)
    cause = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else type(error)
    return f"the database {url} cannot be used: {cause}"


def _command_path(arguments: argparse.Namespace) -> str:
    sub_command = next(
        (
            getattr(arguments, name)
            for name in (
                "database_command",
                "partners_command",
                "promotions_command",
                "keys_command",
                "jobs_command",
                "reconcile_command",
                "settle_command",
            )
            if getattr(arguments, name, None)
        ),
        None,
    )
    # `keys signing ...` and `reconcile exceptions ...` nest one level deeper.
    for nested in ("signing_command", "exceptions_command"):
        if getattr(arguments, nested, None):
            sub_command = f"{sub_command} {getattr(arguments, nested)}"
    return f"{arguments.command} {sub_command}" if sub_command else arguments.command


ENGINE_ATTRIBUTE = "_engine_of_this_command"


def _engine(arguments: argparse.Namespace, settings: Settings) -> Engine:
    """One engine per command, disposed by `main` when the command ends."""
    engine = getattr(arguments, ENGINE_ATTRIBUTE, None)
    if engine is None:
        from coalition.store.engine import create_database_engine

        engine = create_database_engine(settings.database_url)
        setattr(arguments, ENGINE_ATTRIBUTE, engine)
    return engine


def _prepared_engine(arguments: argparse.Namespace, settings: Settings) -> Engine:
    """An engine on a database with the current schema: an empty one is migrated, an
    outdated one refused with a clear error instead of a traceback about missing tables."""
    from coalition.store import migrate

    engine = _engine(arguments, settings)
    migrate.prepare(engine)
    return engine


def _serve(arguments: argparse.Namespace, settings: Settings) -> int:
    from coalition.api import server
    from coalition.partners.manifest import load_manifests
    from coalition.partners.sync import sync_partners
    from coalition.programme import config as programme_config
    from coalition.settlement import commands as settle_commands
    from coalition.store import migrate
    from coalition.store.engine import create_database_engine
    from coalition.store.unit_of_work import UnitOfWork

    engine = create_database_engine(settings.database_url)
    migrate.prepare(engine)
    if arguments.partners:
        _print_sync_report(
            sync_partners(UnitOfWork(engine), load_manifests(Path(arguments.partners)), _now())
        )
    if settings.programme_directory is not None:
        # Checked here, so a bad file fails at once; every worker loads the same directory.
        programme = programme_config.load_programme(settings.programme_directory)
        _seed_promotions(engine, programme, str(settings.programme_directory))
    engine.dispose()
    settings = replace(
        settings,
        signing_key_path=settle_commands.serve_signing_key_path(settings.signing_key_path),
        job_intervals=_job_intervals(arguments) if arguments.jobs else None,
    )
    server.serve(settings)
    return 0


def _job_intervals(arguments: argparse.Namespace) -> dict[str, int]:
    from coalition.scheduler import runner

    try:
        return runner.parse_intervals(arguments.job_interval)
    except ValueError as error:
        raise RuntimeError(str(error)) from error


def _seed_promotions(engine: Engine, programme: Programme, source: str) -> None:
    """Write the file's promotions the database lacks; those it holds are left as they are
    (changed over the API since)."""
    from coalition.programme import promotion_catalogue
    from coalition.store.unit_of_work import UnitOfWork

    with UnitOfWork(engine) as uow:
        written = promotion_catalogue.seed(uow, programme, source, _now())
        uow.commit()
    for promotion_id in written:
        print(f"promotion seeded: {promotion_id}")


def _promotions_seed(arguments: argparse.Namespace, settings: Settings) -> int:
    from coalition.programme import config as programme_config

    programme = programme_config.load_programme(Path(arguments.directory))
    _seed_promotions(_prepared_engine(arguments, settings), programme, arguments.directory)
    return 0


def _database_upgrade(arguments: argparse.Namespace, settings: Settings) -> int:
    from coalition.store import migrate

    migrate.upgrade(_engine(arguments, settings))
    print("database schema is up to date")
    return 0


def _partners_sync(arguments: argparse.Namespace, settings: Settings) -> int:
    from coalition.partners.manifest import load_manifests
    from coalition.partners.sync import sync_partners
    from coalition.store.unit_of_work import UnitOfWork

    engine = _prepared_engine(arguments, settings)
    manifests = load_manifests(Path(arguments.directory))
    _print_sync_report(sync_partners(UnitOfWork(engine), manifests, _now()))
    return 0


def _print_sync_report(report: SyncReport) -> None:
    if not report.changed:
        print("partners: already in sync, nothing changed")
    for name, identifiers in vars(report).items():
        for identifier in identifiers:
            print(f"{name.replace('_', ' ')}: {identifier}")


def _partners_list(arguments: argparse.Namespace, settings: Settings) -> int:
    from coalition.partners import catalog
    from coalition.store.unit_of_work import UnitOfWork

    with UnitOfWork(_prepared_engine(arguments, settings), read_only=True) as uow:
        for partner in catalog.list_partners(uow, "", PARTNERS_LISTED_MAX):
            print(f"{partner.partner_id}  {partner.kind}  {partner.currency}  {partner.name}")
            for version in catalog.list_rate_versions(uow, partner.partner_id):
                # The last two are what settlement bills: docs/settlement.md, "Prices".
                print(
                    f"    {version.rate_version_id}  earn {version.earn_points_per_unit}/unit"
                    f"  burn value {version.burn_value_minor_per_point} minor/point"
                    f"  issuance price {version.issuance_price_minor_per_point} minor/point"
                    f"  redemption price {version.redemption_price_minor_per_point} minor/point"
                )
    return 0


def _keys_issue(arguments: argparse.Namespace, settings: Settings) -> int:
    from coalition.partners import credentials
    from coalition.store.unit_of_work import UnitOfWork

    issued = credentials.issue_key(
        UnitOfWork(_prepared_engine(arguments, settings)),
        arguments.principal_id,
        arguments.role,
        _now(),
    )
    print(f"key id:  {issued.key_id}", file=sys.stderr)
    print("api key (shown once, store it now):", file=sys.stderr)
    print(issued.api_key)
    return 0


def _keys_revoke(arguments: argparse.Namespace, settings: Settings) -> int:
    from coalition.partners import credentials
    from coalition.store.unit_of_work import UnitOfWork

    credentials.revoke_key(
        UnitOfWork(_prepared_engine(arguments, settings)), arguments.key_id, _now()
    )
    print(f"revoked {arguments.key_id}")
    return 0


def _demo(arguments: argparse.Namespace, settings: Settings) -> int:
    from coalition import demo

    return demo.run(settings.database_url_given, arguments.partners, arguments.out)


def _now() -> datetime:
    return datetime.now(UTC)


def _deferred(module: str, table: str, command: str, *, engine: bool = False) -> Handler:
    """The handler `<module>.<table>[command]`, imported when the command runs."""

    def run(arguments: argparse.Namespace, settings: Settings) -> int:
        handlers = getattr(importlib.import_module(module), table)
        if callable(handlers):  # settle_commands.handlers(settings), job_commands(settings)
            handlers = handlers(settings)
        handler = handlers[command]
        return int(
            handler(_prepared_engine(arguments, settings), arguments)
            if engine
            else handler(arguments)
        )

    return run


def _bench(arguments: argparse.Namespace, _settings: Settings) -> int:
    from coalition.bench import command as bench_command

    parser = argparse.ArgumentParser(prog="coalition")
    bench_command.add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return bench_command.run(parser.parse_args(["bench", *arguments.bench_arguments]))


Handler = Callable[[argparse.Namespace, Settings], int]
PARTNERS_LISTED_MAX = 1000
JOBS = "coalition.programme.jobs"
RECONCILE = "coalition.reconciliation.commands"
SETTLE = "coalition.settlement.commands"
COMMANDS: dict[str, Handler] = {
    "serve": _serve,
    "db upgrade": _database_upgrade,
    "partners sync": _partners_sync,
    "partners list": _partners_list,
    "partners import-sales": _deferred(
        "coalition.partners.daily_sales", "SALES_COMMANDS", "partners import-sales", engine=True
    ),
    "promotions seed": _promotions_seed,
    "keys issue": _keys_issue,
    "keys revoke": _keys_revoke,
    "demo": _demo,
    "bench": _bench,
    "report": _deferred("coalition.reports.command", "REPORT_COMMANDS", "report", engine=True),
    **{
        name: _deferred(JOBS, "job_commands", name, engine=True)
        for name in ("jobs expire", "jobs holds", "jobs tiers", "jobs status", "jobs run")
    },
    **{
        name: _deferred(RECONCILE, "RECONCILE_COMMANDS", name, engine=True)
        for name in (
            "reconcile run",
            "reconcile integrity",
            "reconcile exceptions list",
            "reconcile exceptions resolve",
        )
    },
    **{
        name: _deferred(SETTLE, "handlers", name)
        for name in (
            "settle run",
            "settle export",
            "settle summary",
            "settle verify",
            "keys signing generate",
            "keys signing rotate",
            "keys signing list",
        )
    },
}

if __name__ == "__main__":
    sys.exit(main())
