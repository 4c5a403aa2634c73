"""The `coalition settle ...` and `coalition keys signing ...` commands, in process."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

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


def test_settling_every_partner_settles_the_rest_when_one_fails_and_says_which(
    engine: Engine,
    database_url: str,
    ledger: Ledger,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """test-air, the first partner in id order, has an unpriceable entry: test-cinema and
    test-coffee are settled and printed all the same, and the exit status says one failed."""
    january_traffic(ledger)
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE journal_transactions SET rate_version_id = NULL "
                "WHERE partner_id = 'test-air'"
            )
        )
    key_path = tmp_path / "keys" / "hub.pem"
    assert (
        run("keys", "signing", "generate", "--signing-key", str(key_path), "--db", database_url)
        == 0
    )
    capsys.readouterr()
    settle = ("settle", "run", "--period", "2026-01-31", "--signing-key", str(key_path))
    assert run(*settle, "--db", database_url) == 1
    printed = capsys.readouterr()
    assert "created  test-cinema-20260131" in printed.out
    assert "created  test-coffee-20260131" in printed.out
    assert "FAILED  test-air  ENTRY_WITHOUT_RATE_VERSION" in printed.err
    assert "1 of 3 partner(s) not settled" in printed.err
    # a second run finds the two statements and still reports the failure
    assert run(*settle, "--db", database_url) == 1
    assert "existing  test-coffee-20260131" in capsys.readouterr().out


def test_verify_names_only_what_it_checked_and_takes_the_partners_manifest(
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
    for period in ("2026-01-31", "2026-02-28"):
        settle = ("settle", "run", "--period", period, "--partner", "test-coffee")
        assert run(*settle, "--signing-key", str(key_path), "--db", database_url) == 0
    for statement_id in ("test-coffee-20260131", "test-coffee-20260228"):
        out = tmp_path / statement_id
        assert run("settle", "export", statement_id, "--out", str(out), "--db", database_url) == 0
    capsys.readouterr()
    public_key = ("--public-key", str(key_path.with_suffix(".pub")))
    february = str(tmp_path / "test-coffee-20260228")
    assert run("settle", "verify", february, *public_key) == 0
    printed = capsys.readouterr().out
    verified_line = next(line for line in printed.splitlines() if line.startswith("verified:"))
    assert "chain" not in verified_line
    assert "not checked: chain" in printed
    manifests = tmp_path / "partners"
    manifests.mkdir()
    (manifests / "test-coffee.toml").write_text(COFFEE_MANIFEST_TOML)
    previous = ("--previous", str(tmp_path / "test-coffee-20260131"))
    assert (
        run("settle", "verify", february, *public_key, *previous, "--partners", str(manifests)) == 0
    )
    verified_line = capsys.readouterr().out.splitlines()[0]
    assert "chain" in verified_line and "prices" in verified_line
    # a manifest with other prices fails
    (manifests / "test-coffee.toml").write_text(COFFEE_MANIFEST_TOML.replace('"6.0"', '"6.5"'))
    assert run("settle", "verify", february, *public_key, "--partners", str(manifests)) == 1
    assert "FAILED manifest:" in capsys.readouterr().err


# tests.conftest.COFFEE as its partners/test-coffee.toml
COFFEE_MANIFEST_TOML = """
name = "Test Coffee"
kind = "coffee_chain"
currency = "CNY"
roles = ["partner", "merchant"]
points_validity_months = 24

[[rate_versions]]
effective_from = 2025-01-01T00:00:00Z
earn_points_per_unit = "0.1"
burn_value_minor_per_point = "5"
issuance_price_minor_per_point = "6.0"
redemption_price_minor_per_point = "4.5"

[[rate_versions]]
effective_from = 2026-01-01T00:00:00Z
earn_points_per_unit = "0.2"
burn_value_minor_per_point = "5"
issuance_price_minor_per_point = "6.0"
redemption_price_minor_per_point = "4.5"
"""


def test_a_month_is_the_period_of_its_last_day(
    engine: Engine,
    database_url: str,
    ledger: Ledger,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--period` takes the forms of `report` and `reconcile`: YYYY-MM settles up to the end of
    the month, the same statement as its last day."""
    january_traffic(ledger)
    key_path = tmp_path / "hub.pem"
    assert (
        run("keys", "signing", "generate", "--signing-key", str(key_path), "--db", database_url)
        == 0
    )
    settle = ("settle", "run", "--partner", "test-coffee", "--signing-key", str(key_path))
    assert run(*settle, "--period", "2026-01", "--db", database_url) == 0
    assert "created  test-coffee-20260131" in capsys.readouterr().out
    assert run(*settle, "--period", "2026-01-31", "--db", database_url) == 0
    assert "existing  test-coffee-20260131" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        run(*settle, "--period", "2026-01-32", "--db", database_url)
    assert exited.value.code == 2
    assert "--period" in capsys.readouterr().err
