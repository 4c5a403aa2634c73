"""The closing of the demo's past period: what finance and operations do once it is over.

Settle every partner and sign the statements, export them and verify them offline (the
independent verifier, with nothing but the files, the public key and the partner's manifest),
reconcile a partner's own report in which the demo planted discrepancies, prove the ledger's
integrity, and write the period's report.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from coalition.demo.last_month import LastMonth, LoggedOperation
from coalition.demo.output import say
from coalition.partners.manifest import PartnerManifest
from coalition.reconciliation import commands as reconcile_commands
from coalition.reports.build import build_report
from coalition.reports.files import write_report
from coalition.reports.period import Period
from coalition.settlement import export, key_files, keys, readable, service, signing, verify
from coalition.store.unit_of_work import UnitOfWork

REPORT_COLUMNS = ("request_id", "type", "points", "occurred_at", "member")


def close_period(
    engine: Engine,
    manifests: list[PartnerManifest],
    partners_directory: Path,
    period: Period,
    month: LastMonth,
    out_directory: Path,
    first_section: int,
) -> int:
    """Run the closing; the number of the next section."""
    section = first_section
    say(f"\n{section}. Settlement of {period.label}: every partner, signed and chained")
    statement_directories = _settle(engine, manifests, period, out_directory)
    section += 1
    say(f"\n{section}. The statements verified offline (files, public key and manifest only)")
    _verify(statement_directories, manifests, partners_directory, out_directory)
    section += 1
    coffee = next(m for m in manifests if m.kind == "coffee_chain")
    say(
        f"\n{section}. {coffee.partner_id} sends its own report of {period.label}; "
        "the hub reconciles it"
    )
    _reconcile(engine, coffee, period, month, out_directory)
    section += 1
    say(f"\n{section}. The integrity proof of the whole ledger")
    reconcile_commands.reconcile_integrity(engine, (None, None))
    section += 1
    say(f"\n{section}. The report of {period.label}")
    _report(engine, period, out_directory / "report")
    return section + 1


def _settle(
    engine: Engine, manifests: list[PartnerManifest], period: Period, out_directory: Path
) -> list[Path]:
    key_path = out_directory / "keys" / key_files.DEFAULT_SIGNING_KEY_PATH.name
    key = keys.generate(UnitOfWork(engine), key_path, datetime.now(UTC))
    key_path.with_suffix(".pub").write_bytes(signing.public_key_pem(key.public_key))
    say(f"   signing key {key.key_id[:16]}... generated: {key_path} (mode 0600)")
    signer = service.Signer.from_file(key_path)
    last_day = period.end.date() - timedelta(days=1)
    results = service.run_settlement(
        lambda: UnitOfWork(engine), last_day, None, signer, datetime.now(UTC)
    )
    directories = []
    documents = []
    for result in results:
        if isinstance(result, service.PartnerFailure):
            raise RuntimeError(f"{result.partner_id} not settled: {result.error.message}")
        statement = result.statement
        body = statement.body_document()
        directory = out_directory / "statements" / statement.statement_id
        export.export_statement(lambda: UnitOfWork(engine), statement.statement_id, directory)
        directories.append(directory)
        documents.append(json.loads((directory / export.STATEMENT_FILE).read_bytes()))
        say(
            f"   {statement.statement_id:<26} {statement.entry_count:>4} entries  "
            f"{readable.net_sentence(body, statement.partner_id)}  "
            f"hash {statement.statement_hash[:16]}..."
        )
    say(f"   each beside its signed statement.json: {export.STATEMENT_HTML_FILE}, for a reader")
    for totals in readable.group_totals([document["body"] for document in documents]):
        say(
            f"   group, {totals.currency}: {totals.partners} partner(s), owed by partners "
            f"{readable.major(totals.owed_by_partners_minor, totals.currency)}, owed by the hub "
            f"{readable.major(totals.owed_by_hub_minor, totals.currency)}"
        )
    names = {manifest.partner_id: manifest.name for manifest in manifests}
    summary = out_directory / "statements" / f"group-summary-{period.label}.html"
    summary.write_text(readable.group_summary_html(period.label, documents, names), "utf-8")
    say(f"   group summary: {summary}")
    return directories


def _verify(
    directories: list[Path],
    manifests: list[PartnerManifest],
    partners_directory: Path,
    out: Path,
) -> None:
    public_key = verify.read_public_key(out / "keys" / "settlement-signing-key.pub")
    by_id = {manifest.partner_id: manifest for manifest in manifests}
    for directory in directories:
        partner_id = directory.name.rsplit("-", 1)[0]
        result = verify.verify_export(directory, public_key, None, by_id[partner_id])
        if not result.ok:
            raise RuntimeError(f"{directory}: {'; '.join(result.failures)}")
        say(f"   verified {directory.name:<26} ({', '.join(result.checked)})")
    say(
        f"   by hand: coalition settle verify {directories[0]} --public-key "
        f"{out / 'keys' / 'settlement-signing-key.pub'} --partners {partners_directory}"
    )


def _reconcile(
    engine: Engine, partner: PartnerManifest, period: Period, month: LastMonth, out: Path
) -> None:
    operations = list(month.logs[partner.partner_id].operations)
    planted = _plant_discrepancies(operations)
    say("   planted in the partner's file: " + "; ".join(planted))
    report_path = out / "reconciliation" / f"{partner.partner_id}-{period.label}.csv"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(_csv(operations), encoding="utf-8")
    reconcile_commands.reconcile_run(
        engine,
        partner.partner_id,
        report_path,
        "csv",
        (period.start.isoformat(), period.end.isoformat()),
        report_path.parent,
        fail_on_exceptions=False,
    )


def _plant_discrepancies(operations: list[LoggedOperation]) -> list[str]:
    """A POS that recorded one earn with the wrong points and lost another one's record."""
    earns = [index for index, operation in enumerate(operations) if operation.type == "earn"]
    wrong, lost = earns[0], earns[-1]
    original = operations[wrong]
    operations[wrong] = replace(original, points=original.points + 10)
    dropped = operations.pop(lost)
    return [
        f"request {original.request_id[:8]}... says {original.points + 10} points, "
        f"not {original.points}",
        f"request {dropped.request_id[:8]}... is missing",
    ]


def _csv(operations: list[LoggedOperation]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for operation in operations:
        writer.writerow(
            (
                operation.request_id,
                operation.type,
                operation.points,
                operation.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                operation.member,
            )
        )
    return buffer.getvalue()


def _report(engine: Engine, period: Period, directory: Path) -> None:
    with UnitOfWork(engine, read_only=True) as uow:
        report = build_report(uow, period, None, datetime.now(UTC))
    paths = write_report(report, directory)
    say(f"   {len(paths)} files in {directory}")
    say(f"   open {(directory / 'report.html').as_uri()} in a browser")
