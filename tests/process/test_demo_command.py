"""`coalition demo`: the whole story in one command, and the health of the ledger it leaves."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from decimal import Decimal
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

pytestmark = pytest.mark.process

DEMO_TIMEOUT_SECONDS = 60.0
SECTIONS = 15
TOTALS_SECTION = 10
BALANCES_SECTION = 9
TOTALS_HEADER = re.compile(
    r"^\s+partner\s+transactions\s+issued\s+redeemed\s+earn rev\.\s+burn rev\.$"
)
TOTALS_ROW = re.compile(r"^\s+(?P<partner_id>[a-z0-9-]+)(?P<numbers>(?:\s+\d+){5})$")
BALANCE_ROW = re.compile(r"^\s+(?P<name>\S+(?: \S+)*?)\s+(?P<points>\d+) points$")
PARTNER_IDS = sorted(path.stem for path in PARTNERS_DIRECTORY.glob("*.toml"))


def demo(
    *arguments: str, environment_database_url: str | None = None, cwd: Path | None = None
) -> CompletedProcess[str]:
    return run_coalition(
        "demo",
        *arguments,
        environment_database_url=environment_database_url,
        timeout_seconds=DEMO_TIMEOUT_SECONDS,
        **({"cwd": cwd} if cwd is not None else {}),
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
    section = stdout.split(f"\n{BALANCES_SECTION}. ", 1)[1].split(f"\n{TOTALS_SECTION}. ", 1)[0]
    return {
        match["name"]: int(match["points"])
        for line in section.splitlines()
        if (match := BALANCE_ROW.match(line))
    }


def assert_tells_the_whole_story(stdout: str) -> None:
    titles = section_titles(stdout)
    assert [number for number, _ in titles] == list(range(1, SECTIONS + 1)), stdout
    assert titles[TOTALS_SECTION - 1][1].startswith("Per-partner totals")
    totals = partner_totals_printed(stdout)
    assert sorted(totals) == PARTNER_IDS, stdout
    assert all(row[0] > 0 for row in totals.values()), "every partner has transactions"


def written_directory(stdout: str) -> Path:
    match = re.search(r"^Everything the demo wrote is in (\S+)$", stdout, re.M)
    assert match is not None, stdout
    return Path(match[1])


def assert_closes_the_period(stdout: str, out: Path) -> None:
    """Settled and signed, verified offline, the planted discrepancies found, proven, reported."""
    period = re.search(r"^\d+\. Settlement of (\d{4}-\d{2}):", stdout, re.M)
    assert period is not None, stdout
    statements = sorted(path.name for path in (out / "statements").iterdir() if path.is_dir())
    last_day = re.search(r"-(\d{8})$", statements[0])
    assert last_day is not None and last_day[1].startswith(period[1].replace("-", ""))
    assert [name.rsplit("-", 1)[0] for name in statements] == PARTNER_IDS
    verified = re.findall(r"^   verified (\S+) +\(signature, hash, period, prices,", stdout, re.M)
    assert sorted(verified) == statements, stdout
    assert re.search(r"^mismatched +1$", stdout, re.M), stdout
    assert re.search(r"^missing in partner +1$", stdout, re.M), stdout
    assert re.search(r"^integrity PROVEN: \d+ passed, 0 failed, 0 skipped", stdout, re.M), stdout
    report_html = out / "report" / "report.html"
    assert report_html.is_file() and f"open {report_html.as_uri()} in a browser" in stdout
    assert (out / "keys" / "settlement-signing-key.pem").stat().st_mode & 0o077 == 0
    by_hand = re.search(r"^   by hand: coalition (settle verify .+)$", stdout, re.M)
    assert by_hand is not None, stdout
    verified = run_coalition(*by_hand[1].split())
    assert verified.returncode == 0, explain(verified)
    assert "prices" in verified.stdout and "not checked" not in verified.stdout


def test_demo_on_the_embedded_default_tells_the_story_and_leaves_only_its_output(
    tmp_path: Path,
) -> None:
    """No --db, no COALITION_DATABASE_URL, no --out, run from a directory that is not the
    checkout: the demo's partners and programme come from the installed package."""
    result = demo(cwd=tmp_path)

    assert result.returncode == 0, explain(result)
    assert_tells_the_whole_story(result.stdout)
    ledger = re.search(r"^Ledger: sqlite:///(\S+)$", result.stdout, re.M)
    assert ledger is not None, result.stdout
    assert not Path(ledger[1]).exists(), "the temporary demo database is removed"
    out = written_directory(result.stdout)
    try:
        assert_closes_the_period(result.stdout, out)
    finally:
        shutil.rmtree(out)
    assert list(tmp_path.iterdir()) == [], "nothing written into the working directory"
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module", params=["sqlite-option", "sqlite-environment", "postgresql-option"])
def kept_demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(database URL, stdout) of a demo that kept its ledger in a fresh database."""
    if request.param.startswith("sqlite"):
        url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
        out = tmp_path_factory.mktemp("demo-out")
        if request.param == "sqlite-environment":
            result = demo("--out", str(out), environment_database_url=url)
        else:
            result = demo("--db", url, "--out", str(out))
        assert result.returncode == 0, explain(result)
        assert_closes_the_period(result.stdout, out)
        yield url, result.stdout
        return
    with throwaway_postgres_database() as url:
        out = tmp_path_factory.mktemp("demo-out")
        result = demo("--db", url, "--out", str(out))
        assert result.returncode == 0, explain(result)
        assert_closes_the_period(result.stdout, out)
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
                select(members.c.display_name, member_accounts.c.balance_points)
                .join(member_accounts, member_accounts.c.member_id == members.c.member_id)
                .where(member_accounts.c.kind == "member")  # not Mei's hold account
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


@pytest.fixture(scope="module")
def settled_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """(database URL, stdout, --out directory) of a demo kept in SQLite."""
    directory = tmp_path_factory.mktemp("settled-demo")
    url = f"sqlite:///{directory / 'demo.db'}"
    out = directory / "out"
    result = demo("--db", url, "--out", str(out))
    assert result.returncode == 0, explain(result)
    return url, result.stdout, out


def test_settle_summary_of_the_demo_month_adds_up_its_statements_per_currency(
    settled_demo: tuple[str, str, Path], tmp_path: Path
) -> None:
    """`coalition settle summary`, a real process, on the ledger a kept demo settled."""
    url, stdout, out = settled_demo
    period = re.search(r"^\d+\. Settlement of (\d{4}-\d{2}):", stdout, re.M)
    assert period is not None

    summary = run_coalition(
        "settle", "summary", "--period", period[1], "--db", url, "--out", str(tmp_path / "s")
    )

    assert summary.returncode == 0, explain(summary)
    expected: dict[str, list[int]] = {}
    for statement in (out / "statements").glob("*/statement.json"):
        body = json.loads(statement.read_bytes())["body"]
        row = expected.setdefault(body["currency"], [0, 0, 0])
        row[0] += 1
        row[1] += int(body["money"]["owed_by_partner_minor"])
        row[2] += int(body["money"]["owed_by_hub_minor"])
        page = (statement.parent / "statement.html").read_text()
        assert json.loads(statement.read_bytes())["statement_hash"] in page
    printed = {
        match["currency"]: [
            int(match["partners"]),
            round(Decimal(match["owed"].replace(",", "")) * 100),
            round(Decimal(match["paid"].replace(",", "")) * 100),
        ]
        for match in re.finditer(
            r"^(?P<currency>[A-Z]{3})  (?P<partners>\d+) partner\(s\) .* owed by partners "
            r"(?P<owed>[\d,.]+) [A-Z]{3}  owed by the hub (?P<paid>[\d,.]+) [A-Z]{3}$",
            summary.stdout,
            re.M,
        )
    }
    assert printed == expected, summary.stdout
    assert (tmp_path / "s" / f"group-summary-{period[1]}.html").is_file()

    nothing = run_coalition("settle", "summary", "--period", "2020-01", "--db", url)
    assert nothing.returncode == 1
    assert "no statement of the period ending 2020-01-31" in nothing.stderr


def test_operations_lists_and_resolves_the_planted_exceptions(
    settled_demo: tuple[str, str, Path],
) -> None:
    """`coalition reconcile exceptions list|resolve`, real processes, on the demo's run."""
    url, stdout, _ = settled_demo
    run = re.search(r"^run (rr_[0-9a-f]+)$", stdout, re.M)
    assert run is not None, stdout

    listed = run_coalition("reconcile", "exceptions", "list", run[1], "--open", "--db", url)

    assert listed.returncode == 0, explain(listed)
    lines = listed.stdout.splitlines()
    assert sorted(line.split()[1] for line in lines) == ["mismatched", "missing_in_partner"]
    mismatched = next(line for line in lines if line.split()[1] == "mismatched")
    assert re.search(r"points: report \d+ hub \d+", mismatched), mismatched
    exception_id = mismatched.split()[0]
    resolve = ("reconcile", "exceptions", "resolve", exception_id, "--db", url)

    resolved = run_coalition(*resolve, "--note", "POS double-counted", "--by", "ops-mei")

    assert resolved.returncode == 0, explain(resolved)
    assert "resolved" in resolved.stdout and "by ops-mei: POS double-counted" in resolved.stdout
    still_open = run_coalition("reconcile", "exceptions", "list", run[1], "--open", "--db", url)
    assert [line.split()[1] for line in still_open.stdout.splitlines()] == ["missing_in_partner"]
    again = run_coalition(*resolve, "--note", "another story")
    assert again.returncode == 2 and "EXCEPTION_ALREADY_RESOLVED" in again.stderr
    unknown = run_coalition(
        "reconcile", "exceptions", "resolve", "999999", "--note", "x", "--db", url
    )
    assert unknown.returncode == 2 and "EXCEPTION_NOT_FOUND" in unknown.stderr
