"""The handlers of `coalition settle run|export|verify` and `coalition keys signing ...`.

Their parsers are in settlement/arguments.py, which imports nothing heavy, so that `coalition
--help` and other commands do not load the settlement code; cli.py mounts both.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from coalition.partners.catalog import get_partner
from coalition.partners.manifest import ManifestError, PartnerManifest, load_manifest
from coalition.settings import Settings
from coalition.settlement import export, keys, readable, service, signing, verify
from coalition.store import migrate
from coalition.store.engine import create_database_engine
from coalition.store.unit_of_work import UnitOfWork

Handler = Callable[[argparse.Namespace], int]


def serve_signing_key_path(configured: Path | None) -> Path | None:
    """The key `serve` signs with: an explicit option or variable must exist; the default
    file is used when present, and without it the hub serves but cannot run settlements."""
    path = signing.signing_key_path(configured)
    if configured or path.exists():
        return path
    return None


def handlers(settings: Settings) -> dict[str, Handler]:
    return {
        "settle run": partial(_settle_run, settings),
        "settle export": partial(_settle_export, settings),
        "settle summary": partial(_settle_summary, settings),
        "settle verify": _settle_verify,
        "keys signing generate": partial(_signing_generate, settings),
        "keys signing rotate": partial(_signing_rotate, settings),
        "keys signing list": partial(_signing_list, settings),
    }


@contextmanager
def _unit_of_work(settings: Settings) -> Iterator[Callable[[], UnitOfWork]]:
    """Units of work on an engine of the command's own, disposed when the command ends; an
    empty database is migrated, an outdated one refused with a clear error (as every command)."""
    engine = create_database_engine(settings.database_url)
    try:
        migrate.prepare(engine)
        yield partial(UnitOfWork, engine)
    finally:
        engine.dispose()


def _settle_run(settings: Settings, arguments: argparse.Namespace) -> int:
    signer = service.Signer.from_file(signing.signing_key_path(settings.signing_key_path))
    with _unit_of_work(settings) as unit_of_work:
        results = service.run_settlement(
            unit_of_work, arguments.period.last_day, arguments.partner, signer, datetime.now(UTC)
        )
    failures = 0
    for result in results:
        if isinstance(result, service.PartnerFailure):
            failures += 1
            error = result.error
            print(f"FAILED  {result.partner_id}  {error.reason}: {error.message}", file=sys.stderr)
            continue
        statement = result.statement
        money = statement.body_document()["money"]
        print(
            f"{'created' if result.created else 'existing'}  {statement.statement_id}  "
            f"entries {statement.entry_count}  net {money['net_minor']} "
            f"{statement.body_document()['currency']} minor ({money['net_direction']})  "
            f"hash {statement.statement_hash}"
        )
    if failures:
        print(f"error: {failures} of {len(results)} partner(s) not settled", file=sys.stderr)
        return 1
    return 0


def _settle_summary(settings: Settings, arguments: argparse.Namespace) -> int:
    period = arguments.period
    with _unit_of_work(settings) as unit_of_work, unit_of_work() as uow:
        statements = service.statements_of_period(
            uow, period.last_day, service.STATEMENTS_OF_PERIOD_MAX
        )
        names = {
            statement.partner_id: get_partner(uow, statement.partner_id).name
            for statement in statements
        }
    if not statements:
        print(
            f"error: no statement of the period ending {period.last_day}: "
            f"run `coalition settle run --period {period.label}` first",
            file=sys.stderr,
        )
        return 1
    documents = [json.loads(export.statement_document(statement)) for statement in statements]
    print(f"group summary of the period ending {period.last_day}: {len(statements)} statements")
    for totals in readable.group_totals([document["body"] for document in documents]):
        print(
            f"{totals.currency}  {totals.partners} partner(s)  "
            f"issued {totals.points['issued']:,}  redeemed {totals.points['redeemed']:,}  "
            f"expired {totals.points['expired']:,}  "
            f"owed by partners {readable.major(totals.owed_by_partners_minor, totals.currency)}  "
            f"owed by the hub {readable.major(totals.owed_by_hub_minor, totals.currency)}"
        )
    if arguments.out is not None:
        arguments.out.mkdir(parents=True, exist_ok=True)
        path = arguments.out / f"group-summary-{period.label}.html"
        path.write_text(
            readable.group_summary_html(period.label, documents, names), encoding="utf-8"
        )
        print(f"written {path}")
    return 0


def _settle_export(settings: Settings, arguments: argparse.Namespace) -> int:
    try:
        with _unit_of_work(settings) as unit_of_work:
            statement = export.export_statement(unit_of_work, arguments.statement_id, arguments.out)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"exported {statement.statement_id} ({statement.entry_count} entries) to {arguments.out}")
    return 0


def _settle_verify(arguments: argparse.Namespace) -> int:
    public_key = verify.read_public_key(arguments.public_key)
    try:
        manifest = _verify_manifest(arguments)
    except (ManifestError, OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    result = verify.verify_export(arguments.directory, public_key, arguments.previous, manifest)
    for note in result.notes:
        print(f"note: {note}")
    for failure in result.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    if not result.ok:
        return 1
    # Name only what was checked: an unchecked chain or unchecked prices are not "verified".
    print(f"verified: {arguments.directory} ({', '.join(result.checked)})")
    unchecked = [
        *(["chain"] if not any(c.startswith("chain") for c in result.checked) else []),
        *(["prices (give --manifest or --partners)"] if "prices" not in result.checked else []),
    ]
    if unchecked:
        print(f"not checked: {', '.join(unchecked)}")
    return 0


def _verify_manifest(arguments: argparse.Namespace) -> PartnerManifest | None:
    if arguments.manifest is not None:
        return load_manifest(arguments.manifest)
    if arguments.partners is None:
        return None
    # The statement names its partner; its manifest is <partner_id>.toml (docs/partners.md).
    document = json.loads((arguments.directory / export.STATEMENT_FILE).read_bytes())
    partner_id = document["body"]["partner_id"]
    if not isinstance(partner_id, str) or "/" in partner_id or partner_id.startswith("."):
        raise ValueError(f"the statement's partner_id {partner_id!r} names no manifest file")
    return load_manifest(arguments.partners / f"{partner_id}.toml")


def _signing_generate(settings: Settings, arguments: argparse.Namespace) -> int:
    path = signing.signing_key_path(settings.signing_key_path)
    with _unit_of_work(settings) as unit_of_work:
        key = keys.generate(unit_of_work(), path, datetime.now(UTC))
    _print_key(path, key)
    return 0


def _signing_rotate(settings: Settings, arguments: argparse.Namespace) -> int:
    path = signing.signing_key_path(settings.signing_key_path)
    with _unit_of_work(settings) as unit_of_work:
        key = keys.rotate(unit_of_work(), path, datetime.now(UTC))
    _print_key(path, key)
    return 0


def _print_key(path: Path, key: keys.SigningKey) -> None:
    public_path = path.with_suffix(".pub")
    public_path.write_bytes(signing.public_key_pem(key.public_key))
    print(f"signing key {key.key_id}: private key {path} (mode 0600), public key {public_path}")


def _signing_list(settings: Settings, arguments: argparse.Namespace) -> int:
    with _unit_of_work(settings) as unit_of_work, unit_of_work() as uow:
        published = keys.list_keys(uow)
    for key in published:
        until = "active" if key.valid_until is None else f"until {key.valid_until.isoformat()}"
        public_key = base64.b64encode(key.public_key).decode()
        valid_from = key.valid_from.isoformat()
        print(f"{key.key_id}  {key.algorithm}  from {valid_from}  {until}  {public_key}")
    return 0
