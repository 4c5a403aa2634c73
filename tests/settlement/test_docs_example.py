"""The worked example of docs/settlement.md, read from the document itself: its bytes verify
with `coalition settle verify` as written, and every hash it states is what it says."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from coalition import cli
from tests.settlement.test_commands import COFFEE_MANIFEST_TOML

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "settlement.md"


def worked_example() -> dict[str, object]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Worked example") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```\n(.*?)\n```", section, re.DOTALL)

    def after(label: str) -> str:
        match = re.search(re.escape(label) + r"\s*`([^`]+)`", section)
        assert match is not None, label
        return match.group(1)

    return {
        "entries": [line.encode() for line in blocks[0].split("\n")],
        "body": blocks[1].encode(),
        "public_key": after("Public key (base64)"),
        "key_id": after("key id"),
        "leaf_hashes": [after("Leaf hashes"), after("` and")],
        "merkle_root": after("Merkle root"),
        "statement_hash": after("`statement_hash` ="),
        "signature": after("signature (base64)"),
    }


def test_the_worked_example_verifies_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = worked_example()
    entries: list[bytes] = example["entries"]  # type: ignore[assignment]
    body: bytes = example["body"]  # type: ignore[assignment]
    public_key = base64.b64decode(str(example["public_key"]))
    assert hashlib.sha256(public_key).hexdigest() == example["key_id"]
    leaves = [hashlib.sha256(b"\x00" + entry).digest() for entry in entries]
    assert [leaf.hex() for leaf in leaves] == example["leaf_hashes"]
    assert hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).hexdigest() == example["merkle_root"]
    assert hashlib.sha256(body).hexdigest() == example["statement_hash"]

    export = tmp_path / "export"
    export.mkdir()
    (export / "entries.jsonl").write_bytes(b"".join(entry + b"\n" for entry in entries))
    statement = (
        b'{"body":' + body + b',"signature":"' + str(example["signature"]).encode()
        + b'","statement_hash":"' + str(example["statement_hash"]).encode() + b'"}'
    )  # fmt: skip
    (export / "statement.json").write_bytes(statement)
    (tmp_path / "key.pub").write_text(str(example["public_key"]))
    manifest = tmp_path / "test-coffee.toml"
    manifest.write_text(COFFEE_MANIFEST_TOML)
    arguments = ["settle", "verify", str(export), "--public-key", str(tmp_path / "key.pub")]
    assert cli.main([*arguments, "--manifest", str(manifest)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "verified:" in out and "prices" in out and "chain (genesis)" in out
