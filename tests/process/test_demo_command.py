"""`coalition demo`: the whole story in one command, and the health of the ledger it leaves."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from sqlalchemy import func, select, update

from coalition.store.schema import journal_transactions, lots, member_accounts, members, postings
from tests.process.commands import (
    PARTNERS_DIRECTORY,
    database_engine,
    explain,
    run_coalition,
    throwaway_postgres_database,
)
from tests.process.ledger_health import ledger_size, ledger_violations

pytestmark = pytest.mark.end_to_end

DEMO_TIMEOUT_SECONDS = 60.0
SECTIONS = 8
TOTALS_HEADER = re.compile(
    r"^\s+partner\s+transactions\s+issued\s+redeemed\s+earn rev\.\s+burn rev\.$"
)
TOTALS_ROW = re.compile(r"^\s+(?P<partner_id>[a-z0-9-]+)(?P<numbers>(?:\s+\d+){5})$")
BALANCE_ROW = re.compile(r"^\s+(?P<name>\S+(?: \S+)*?)\s+(?P<points>\d+) points$")
PARTNER_IDS = sorted(path.stem for path in PARTNERS_DIRECTORY.glob("*.toml"))


def demo(*arguments: str, environment_database_url: str | None = None) -> CompletedProcess[str]:
    return run_coalition(
        "demo",
        *arguments,
        environment_database_url=environment_database_url,
        timeout_seconds=DEMO_TIMEOUT_SECONDS,
    )


def section_titles(stdout: str) -> list[tuple[int, str]]:
    return [(int(match[1]), match[2]) for match in re.finditer(r"^(\d+)\. (\S.*)$", stdout, re.M)]


def partner_totals_printed(stdout: str) -> dict[str, list[int]]:
    lines = stdout.splitlines()
    header = next(index for index, line in enumerate(lines) if TOTALS_HEADER.match(line))
    rows = {}
    for line in lines[header + 1 :]:
        match = TOTALS_ROW.match(line)
        if match is None:
            break
        rows[match["partner_id"]] = [int(number) for number in match["numbers"].split()]
    return rows


def balances_printed(stdout: str) -> dict[str, int]:
    section = stdout.split("\n7. ", 1)[1].split("\n8. ", 1)[0]
    return {
        match["name"]: int(match["points"])
        for line in section.splitlines()
        if (match := BALANCE_ROW.match(line))
    }


def assert_tells_the_whole_story(stdout: str) -> None:
    titles = section_titles(stdout)
    assert [number for number, _ in titles] == list(range(1, SECTIONS + 1)), stdout
    assert titles[-1][1].startswith("Per-partner totals")
    totals = partner_totals_printed(stdout)
    assert sorted(totals) == PARTNER_IDS, stdout
    assert all(row[0] > 0 for row in totals.values()), "every partner has transactions"


def test_demo_on_the_embedded_default_tells_the_story_and_leaves_nothing(tmp_path: Path) -> None:
    result = demo()  # no --db and no COALITION_DATABASE_URL, run from the repository root

    assert result.returncode == 0, explain(result)
    assert_tells_the_whole_story(result.stdout)
    ledger = re.search(r"^Ledger: sqlite:///(\S+)$", result.stdout, re.M)
    assert ledger is not None, result.stdout
    assert not Path(ledger[1]).exists(), "the temporary demo database is removed"
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module", params=["sqlite-option", "sqlite-environment", "postgresql-option"])
def kept_demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(database URL, stdout) of a demo that kept its ledger in a fresh database."""
    if request.param.startswith("sqlite"):
        url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
        if request.param == "sqlite-environment":
            result = demo(environment_database_url=url)
        else:
            result = demo("--db", url)
        assert result.returncode == 0, explain(result)
        yield url, result.stdout
        return
    with throwaway_postgres_database() as url:
        result = demo("--db", url)
        assert result.returncode == 0, explain(result)
        yield url, result.stdout


def test_a_kept_demo_ledger_is_healthy(kept_demo: tuple[str, str]) -> None:
    database_url, stdout = kept_demo
    assert_tells_the_whole_story(stdout)
    size = ledger_size(database_url)
    assert size.members == 6
    assert size.transactions > 100
    assert size.postings >= 2 * size.transactions
    assert size.points_outstanding > 0

    assert ledger_violations(database_url) == []


def test_a_kept_demo_printed_what_its_ledger_holds(kept_demo: tuple[str, str]) -> None:
    database_url, stdout = kept_demo
    with database_engine(database_url) as engine, engine.connect() as connection:
        transactions_by_partner: dict[str, int] = dict(
            connection.execute(
                select(journal_transactions.c.partner_id, func.count()).group_by(
                    journal_transactions.c.partner_id
                )
            ).all()
        )
        balance_by_name: dict[str, int] = dict(
            connection.execute(
                select(members.c.display_name, member_accounts.c.balance_points).join(
                    member_accounts, member_accounts.c.member_id == members.c.member_id
                )
            ).all()
        )

    printed_totals = partner_totals_printed(stdout)
    assert {partner: row[0] for partner, row in printed_totals.items()} == transactions_by_partner
    assert balances_printed(stdout) == balance_by_name


@pytest.mark.parametrize("kept_demo", ["sqlite-option"], indirect=True)
def test_the_health_checks_catch_a_corrupted_ledger(
    kept_demo: tuple[str, str], tmp_path: Path
) -> None:
    """The checks above are only worth something if they can fail."""
    database_url, _ = kept_demo
    corrupted = tmp_path / "corrupted.db"
    shutil.copy(database_url.removeprefix("sqlite:///"), corrupted)
    corrupted_url = f"sqlite:///{corrupted}"
    with database_engine(corrupted_url) as engine, engine.begin() as connection:
        posting_id = connection.execute(select(func.min(postings.c.posting_id))).scalar_one()
        connection.execute(
            update(postings)
            .where(postings.c.posting_id == posting_id)
            .values(points=postings.c.points + 1)
        )
        lot_id = connection.execute(
            select(func.min(lots.c.lot_id)).where(lots.c.remaining_points > 0)
        ).scalar_one()
        connection.execute(
            update(lots)
            .where(lots.c.lot_id == lot_id)
            .values(remaining_points=lots.c.remaining_points - 1)
        )

    violations = "\n".join(ledger_violations(corrupted_url))

    assert "postings sum to 1, not 0" in violations
    assert "balance cache" in violations
    assert "remaining points" in violations
