"""`coalition partners sync DIR` and `coalition partners list`, on both databases.

Sync is all or nothing and never rewrites history: a refused sync must leave every table
exactly as it was.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.process.commands import (
    PARTNERS_DIRECTORY,
    count_rows,
    explain,
    run_coalition,
    run_in_process,
    table_contents,
)

pytestmark = pytest.mark.process

REPO_PARTNER_IDS = sorted(path.stem for path in PARTNERS_DIRECTORY.glob("*.toml"))
# The repo's larkspur-air manifest schedules a version for 2027-01-01, not yet in force.
AIR_FUTURE_VERSION = "2027-01-01T00:00:00Z"
FAR_FUTURE_VERSION = "2099-01-01T00:00:00Z"
FAR_FUTURE_BLOCK = f"""
[[rate_versions]]
effective_from = {FAR_FUTURE_VERSION}
earn_points_per_unit = "0.5"
native_points_rate = "0.4"
burn_value_minor_per_point = "1"
issuance_price_minor_per_point = "1.2"
redemption_price_minor_per_point = "0.9"
"""


def sync(directory: Path, database_url: str) -> CompletedProcess[str]:
    """`partners sync` in this process (test_first_sync_... runs the real command)."""
    return run_in_process("partners", "sync", str(directory), "--db", database_url)


def copy_of_partners(tmp_path: Path) -> Path:
    directory = tmp_path / "partners"
    shutil.copytree(PARTNERS_DIRECTORY, directory)
    return directory


def rate_version_block(manifest: str, effective_from: str) -> tuple[int, int]:
    """Start and end offsets of the [[rate_versions]] table with this effective_from."""
    starts = [match.start() for match in re.finditer(r"^\[\[rate_versions\]\]", manifest, re.M)]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(manifest)
        if f"effective_from = {effective_from}\n" in manifest[start:end]:
            return start, end
    raise AssertionError(f"no rate version effective {effective_from} in the manifest")


def edit_rate(path: Path, effective_from: str, field: str, value: str) -> None:
    manifest = path.read_text()
    start, end = rate_version_block(manifest, effective_from)
    block, replaced = re.subn(
        rf'^{field} = "[^"]*"$', f'{field} = "{value}"', manifest[start:end], flags=re.M
    )
    assert replaced == 1, f"{field} not found once in the version of {effective_from}"
    path.write_text(manifest[:start] + block + manifest[end:])


def remove_rate_version(path: Path, effective_from: str) -> None:
    manifest = path.read_text()
    start, end = rate_version_block(manifest, effective_from)
    path.write_text(manifest[:start] + manifest[end:])


@pytest.fixture
def synced_url(database_url: str) -> str:
    """A migrated database holding the repo's partners, synced by the real command."""
    result = sync(PARTNERS_DIRECTORY, database_url)
    assert result.returncode == 0, explain(result)
    return database_url


def test_first_sync_creates_partners_and_rate_versions(database_url: str) -> None:
    result = run_coalition("partners", "sync", str(PARTNERS_DIRECTORY), "--db", database_url)

    assert result.returncode == 0, explain(result)
    for partner_id in REPO_PARTNER_IDS:
        assert f"partners created: {partner_id}\n" in result.stdout
    assert "larkspur-air@2027-01-01T00:00:00Z" in result.stdout
    contents = table_contents(database_url)
    assert sorted(str(row[0]) for row in contents["partners"]) == REPO_PARTNER_IDS
    versions_declared = sum(
        len(re.findall(r"^\[\[rate_versions\]\]$", path.read_text(), re.M))
        for path in PARTNERS_DIRECTORY.glob("*.toml")
    )
    assert len(contents["rate_versions"]) == versions_declared
    assert result.stdout.count("rate versions created: ") == versions_declared
    # Each partner gets its issuance and redemption accounts, without a balance cache.
    assert len(contents["accounts"]) == 2 * len(REPO_PARTNER_IDS)


def test_second_sync_changes_nothing_and_says_so(synced_url: str) -> None:
    before = table_contents(synced_url)

    result = sync(PARTNERS_DIRECTORY, synced_url)

    assert result.returncode == 0, explain(result)
    assert result.stdout == "partners: already in sync, nothing changed\n"
    assert table_contents(synced_url) == before


def test_rewriting_a_rate_in_force_is_refused_and_changes_nothing(
    synced_url: str, tmp_path: Path
) -> None:
    directory = copy_of_partners(tmp_path)
    edit_rate(
        directory / "larkspur-coffee.toml", "2025-01-01T00:00:00Z", "earn_points_per_unit", "0.3"
    )
    # A new partner sorted before the refused one: all or nothing means it is not created.
    shutil.copy(directory / "larkspur-cinema.toml", directory / "aaa-newcomer.toml")
    before = table_contents(synced_url)

    result = sync(directory, synced_url)

    assert result.returncode != 0, explain(result)
    assert "RATE_VERSION_IN_FORCE" in result.stderr
    assert "larkspur-coffee@2025-01-01T00:00:00Z" in result.stderr
    assert "Traceback" not in result.stderr
    assert table_contents(synced_url) == before


def test_removing_a_rate_version_in_force_is_refused_and_changes_nothing(
    synced_url: str, tmp_path: Path
) -> None:
    directory = copy_of_partners(tmp_path)
    remove_rate_version(directory / "larkspur-air.toml", "2026-04-01T00:00:00Z")
    before = table_contents(synced_url)

    result = sync(directory, synced_url)

    assert result.returncode != 0, explain(result)
    assert "RATE_VERSION_IN_FORCE" in result.stderr
    assert "larkspur-air@2026-04-01T00:00:00Z" in result.stderr
    assert table_contents(synced_url) == before


@pytest.mark.parametrize("effective_from", [AIR_FUTURE_VERSION, FAR_FUTURE_VERSION])
def test_a_future_rate_version_may_be_edited_then_withdrawn(
    synced_url: str, tmp_path: Path, effective_from: str
) -> None:
    if datetime.fromisoformat(effective_from) <= datetime.now(UTC):
        pytest.skip(f"the repo's version of {effective_from} is in force by now")
    directory = copy_of_partners(tmp_path)
    manifest = directory / "larkspur-air.toml"
    if effective_from == FAR_FUTURE_VERSION:
        manifest.write_text(manifest.read_text() + FAR_FUTURE_BLOCK)
        added = sync(directory, synced_url)
        assert added.returncode == 0, explain(added)
    version_id = f"larkspur-air@{effective_from}"
    edit_rate(manifest, effective_from, "earn_points_per_unit", "0.7")
    before = table_contents(synced_url)

    edited = sync(directory, synced_url)

    assert edited.returncode == 0, explain(edited)
    assert edited.stdout == f"rate versions updated: {version_id}\n"
    after = table_contents(synced_url)
    changed = [row for row in after["rate_versions"] if row not in before["rate_versions"]]
    assert [(row[0], row[3]) for row in changed] == [(version_id, "0.7")]
    assert len(after["rate_versions"]) == len(before["rate_versions"])
    assert {k: v for k, v in after.items() if k != "rate_versions"} == {
        k: v for k, v in before.items() if k != "rate_versions"
    }

    remove_rate_version(manifest, effective_from)
    withdrawn = sync(directory, synced_url)

    assert withdrawn.returncode == 0, explain(withdrawn)
    assert withdrawn.stdout == f"rate versions withdrawn: {version_id}\n"
    assert version_id not in {row[0] for row in table_contents(synced_url)["rate_versions"]}


MALFORMED = {
    "float rate": (
        "larkspur-coffee",
        ('earn_points_per_unit = "0.2"', "earn_points_per_unit = 0.2"),
        "rate_versions[0].earn_points_per_unit",
    ),
    "misspelt key": (
        "larkspur-market",
        ("points_validity_months = 24", "points_validity_month = 24"),
        "points_validity_month",
    ),
    "unknown currency": ("larkspur-cinema", ('currency = "GBP"', 'currency = "XXQ"'), "currency"),
    "versions out of order": (
        "larkspur-air",
        ("effective_from = 2026-04-01T00:00:00Z", "effective_from = 2024-04-01T00:00:00Z"),
        "rate_versions[1].effective_from",
    ),
    "not TOML": ("larkspur-coffee", ('name = "Larkspur Coffee"', "name = Larkspur Coffee"), ""),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_names_file_and_field_and_changes_nothing(
    database_url: str, tmp_path: Path, case: str
) -> None:
    partner_id, (old, new), field = MALFORMED[case]
    directory = copy_of_partners(tmp_path)
    path = directory / f"{partner_id}.toml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    before = table_contents(database_url)

    result = sync(directory, database_url)

    assert result.returncode != 0, explain(result)
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, explain(result)
    assert str(path) in error_lines[0]
    assert f": {field}: " in error_lines[0] if field else "not valid TOML" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert table_contents(database_url) == before


def test_sync_of_a_missing_directory_is_a_clear_error(database_url: str, tmp_path: Path) -> None:
    result = sync(tmp_path / "nowhere", database_url)

    assert result.returncode != 0
    assert f"error: {tmp_path / 'nowhere'}: not a directory" in result.stderr
    assert count_rows(database_url, "partners") == 0


def test_partners_list_prints_partners_and_their_rate_versions(synced_url: str) -> None:
    # No --db: the URL comes from COALITION_DATABASE_URL.
    result = run_coalition("partners", "list", environment_database_url=synced_url)

    assert result.returncode == 0, explain(result)
    lines = result.stdout.splitlines()
    partner_lines = [line for line in lines if not line.startswith(" ")]
    assert [line.split()[0] for line in partner_lines] == REPO_PARTNER_IDS
    assert "larkspur-air  airline  EUR  Larkspur Air" in partner_lines
    assert "larkspur-coffee  coffee_chain  CNY  Larkspur Coffee" in partner_lines
    version_ids = {line.split()[0] for line in lines if line.startswith(" ")}
    assert version_ids == {row[0] for row in table_contents(synced_url)["rate_versions"]}
    assert "    larkspur-air@2027-01-01T00:00:00Z  earn 0.8/unit" in result.stdout
    # The prices settlement bills at, as the database holds them.
    prices = {
        row[0]: (row[6], row[7])  # issuance_price_minor_per_point, redemption_price_...
        for row in table_contents(synced_url)["rate_versions"]
    }
    for line in lines:
        if line.startswith(" "):
            issuance, redemption = prices[line.split()[0]]
            assert f"issuance price {issuance} minor/point" in line, line
            assert f"redemption price {redemption} minor/point" in line, line
