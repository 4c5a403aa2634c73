"""The `coalition settle ...` and `coalition keys signing ...` commands, in process."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine

from coalition import cli
from coalition.settlement.export import ENTRIES_FILE
from tests.settlement.conftest import Ledger
from tests.settlement.test_statements import january_traffic

pytestmark = pytest.mark.integration


def run(*arguments: str) -> int:
    return cli.main(list(arguments))


def test_generate_settle_export_verify_and_detect_a_tamper(
    engine: Engine,
    database_url: str,
    ledger: Ledger,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    january_traffic(ledger)
    key_path = tmp_path / "keys" / "hub.pem"
    assert (
        run("keys", "signing", "generate", "--signing-key", str(key_path), "--db", database_url)
        == 0
    )
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    public_key_path = key_path.with_suffix(".pub")
    assert public_key_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert (
        run("keys", "signing", "generate", "--signing-key", str(key_path), "--db", database_url)
        == 1
    )
    assert "SIGNING_KEY_EXISTS" in capsys.readouterr().err

    settle = ("settle", "run", "--period", "2026-01-31", "--partner", "test-coffee")
    assert run(*settle, "--signing-key", str(key_path), "--db", database_url) == 0
    assert "created  test-coffee-20260131" in capsys.readouterr().out
    assert run(*settle, "--signing-key", str(key_path), "--db", database_url) == 0
    assert "existing  test-coffee-20260131" in capsys.readouterr().out

    out = tmp_path / "export"
    assert (
        run("settle", "export", "test-coffee-20260131", "--out", str(out), "--db", database_url)
        == 0
    )
    assert (
        run("settle", "export", "test-coffee-20260131", "--out", str(out), "--db", database_url)
        == 1
    )
    verify = ("settle", "verify", str(out), "--public-key", str(public_key_path))
    capsys.readouterr()
    assert run(*verify) == 0
    assert "verified" in capsys.readouterr().out

    lines = (out / ENTRIES_FILE).read_bytes().splitlines(keepends=True)
    (out / ENTRIES_FILE).write_bytes(b"".join(lines[:-1]))
    assert run(*verify) == 1
    assert "FAILED merkle root" in capsys.readouterr().err


def test_rotate_keeps_the_file_owner_only_and_lists_both_keys(
    engine: Engine, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_path = tmp_path / "hub.pem"
    assert (
        run("keys", "signing", "generate", "--signing-key", str(key_path), "--db", database_url)
        == 0
    )
    first = key_path.read_bytes()
    assert (
        run("keys", "signing", "rotate", "--signing-key", str(key_path), "--db", database_url) == 0
    )
    assert key_path.read_bytes() != first
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    capsys.readouterr()
    assert run("keys", "signing", "list", "--db", database_url) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2
    assert "until " in listed[0] and listed[1].split()[4] == "active"


def test_a_world_readable_key_is_refused_before_signing(
    engine: Engine, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_path = tmp_path / "hub.pem"
    assert (
        run("keys", "signing", "generate", "--signing-key", str(key_path), "--db", database_url)
        == 0
    )
    key_path.chmod(0o644)
    code = run(
        "settle",
        "run",
        "--period",
        "2026-01-31",
        "--signing-key",
        str(key_path),
        "--db",
        database_url,
    )
    assert code == 1
    assert "chmod 600" in capsys.readouterr().err


def test_signing_and_settle_commands_prepare_an_empty_database_like_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert run("keys", "signing", "list", "--db", database_url) == 0
    key_path = tmp_path / "hub.pem"
    assert (
        run("keys", "signing", "generate", "--signing-key", str(key_path), "--db", database_url)
        == 0
    )
    assert run("keys", "signing", "list", "--db", database_url) == 0
    assert "active" in capsys.readouterr().out
