"""Every command that needs the database answers one clear error line and a non-zero exit
while the database is down: never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalition import cli
from coalition.settlement.signing import write_new_private_key
from tests.process.commands import run_coalition

pytestmark = pytest.mark.process

# Nothing listens on port 1: the connection is refused, as by a stopped server.
DOWN_URL = "postgresql://postgres@127.0.0.1:1/coalition"
# Commands that never open the hub's database.
WITHOUT_DATABASE = {"bench", "settle verify"}


def signing_key(tmp_path: Path) -> Path:
    path = tmp_path / "settlement.pem"
    write_new_private_key(path)
    return path


def arguments_of(command: str, tmp_path: Path) -> list[str]:
    report = tmp_path / "report.csv"
    report.write_text("request_id,type,points,occurred_at\n")
    sales = tmp_path / "sales.csv"
    sales.write_text("partner_id,sales_date,amount_minor,currency\ntest-air,2026-03-03,1,EUR\n")
    extra = {
        "serve": ["--listen", "127.0.0.1:0"],
        "partners sync": [str(cli.__file__)],
        "partners import-sales": [str(sales)],
        "promotions seed": [str(Path(cli.__file__).parents[2] / "config")],
        "keys issue": ["test-coffee", "--role", "partner"],
        "keys revoke": ["0123456789abcdef"],
        "report": ["--period", "2026-03", "--out", str(tmp_path / "out")],
        "reconcile run": ["--partner", "test-coffee", str(report)],
        "settle run": ["--period", "2026-03-31", "--signing-key", str(signing_key(tmp_path))],
        "settle export": ["--out", str(tmp_path / "out"), "1"],
        "keys signing generate": ["--signing-key", str(tmp_path / "key.pem")],
        "keys signing rotate": ["--signing-key", str(tmp_path / "key.pem")],
        "settle summary": ["--period", "2026-03"],
        "jobs run": ["holds"],
        "reconcile exceptions list": ["rr_0123"],
        "reconcile exceptions resolve": ["1", "--note", "checked"],
    }.get(command, [])
    return [*command.split(), *extra, "--db", DOWN_URL]


@pytest.mark.parametrize("command", sorted(set(cli.COMMANDS) - WITHOUT_DATABASE))
def test_every_command_says_the_database_is_down(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = cli.main(arguments_of(command, tmp_path))
    captured = capsys.readouterr()
    assert exit_code != 0
    assert captured.err.startswith("error: DATABASE_UNAVAILABLE: "), captured.err
    assert "127.0.0.1:1" in captured.err and "Traceback" not in captured.err
    assert len(captured.err.splitlines()) == 1, captured.err


def test_the_installed_command_exits_non_zero_without_a_traceback() -> None:
    result = run_coalition("jobs", "expire", "--db", DOWN_URL)
    assert result.returncode == 1
    assert result.stderr.startswith("error: DATABASE_UNAVAILABLE: ") and "Traceback" not in (
        result.stderr
    )
