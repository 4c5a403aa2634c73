"""Export a statement for offline verification: DIR/statement.json and DIR/entries.jsonl,
and DIR/acknowledgement.json once the partner countersigned (docs/settlement.md), and
DIR/statement.html, the same statement for a reader (settlement/readable.py; the JSON is the
signed truth and the page carries its hash).

statement.json is the canonical JSON of {"body", "signature", "statement_hash"}; entries.jsonl
holds one canonical entry per line, each line ending in "\\n", in Merkle order. Entries are
streamed from the database straight to the file.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

from coalition.partners.catalog import get_partner
from coalition.settlement import readable, service
from coalition.settlement.canonical import canonical_bytes
from coalition.settlement.format import timestamp_text
from coalition.settlement.service import Statement
from coalition.store.unit_of_work import UnitOfWork

STATEMENT_FILE = "statement.json"
ENTRIES_FILE = "entries.jsonl"
ACKNOWLEDGEMENT_FILE = "acknowledgement.json"
STATEMENT_HTML_FILE = "statement.html"
ACKNOWLEDGEMENT_FORMAT = "coalition.settlement.acknowledgement.v1"


def statement_document(statement: Statement) -> bytes:
    return canonical_bytes(
        {
            "body": statement.body_document(),
            "signature": base64.b64encode(statement.signature).decode(),
            "statement_hash": statement.statement_hash,
        }
    )


def acknowledgement_document(
    statement: Statement, acknowledgement: service.Acknowledgement
) -> bytes:
    return canonical_bytes(
        {
            "format": ACKNOWLEDGEMENT_FORMAT,
            "statement_id": statement.statement_id,
            "statement_hash": statement.statement_hash,
            "partner_public_key": base64.b64encode(acknowledgement.partner_public_key).decode(),
            "signature": base64.b64encode(acknowledgement.signature).decode(),
            "acknowledge_time": timestamp_text(acknowledgement.create_time),
        }
    )


def export_statement(
    unit_of_work: Callable[[], UnitOfWork], statement_id: str, directory: Path
) -> Statement:
    """Write the two files; refuses to overwrite an earlier export."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in (STATEMENT_FILE, ENTRIES_FILE, ACKNOWLEDGEMENT_FILE, STATEMENT_HTML_FILE):
        if (directory / name).exists():
            raise FileExistsError(f"{directory / name} exists; export into an empty directory")
    with unit_of_work() as uow:
        statement = service.get_statement(uow, statement_id, partner_id=None)
        acknowledgement = service.find_acknowledgement(uow, statement_id)
        partner_name = get_partner(uow, statement.partner_id).name
    entries_path = directory / ENTRIES_FILE
    with entries_path.open("xb") as file:
        for entry in service.stream_entries(unit_of_work, statement_id, None):
            file.write(entry.canonical_bytes() + b"\n")
        file.flush()
        os.fsync(file.fileno())
    if acknowledgement is not None:
        with (directory / ACKNOWLEDGEMENT_FILE).open("xb") as file:
            file.write(acknowledgement_document(statement, acknowledgement))
    document = statement_document(statement)
    with (directory / STATEMENT_HTML_FILE).open("x", encoding="utf-8") as page:
        page.write(readable.statement_html(json.loads(document), partner_name))
    # statement.json last: a directory holding it holds a complete export.
    with (directory / STATEMENT_FILE).open("xb") as file:
        file.write(document)
    return statement
