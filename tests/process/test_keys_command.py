"""`coalition keys issue` / `keys revoke`: a key is shown once and stored only as a hash."""

from __future__ import annotations

import hashlib
from subprocess import CompletedProcess

import pytest
from sqlalchemy import Engine, select

from coalition.partners import credentials
from coalition.store.schema import api_keys
from coalition.store.unit_of_work import UnitOfWork
from tests.process.commands import count_rows, explain, run_coalition, text_values

pytestmark = pytest.mark.process

# conftest's test partners: test-coffee allows partner and merchant keys, test-air only partner.
PARTNER_WITH_MERCHANT_ROLE = "test-coffee"
PARTNER_WITHOUT_MERCHANT_ROLE = "test-air"


def issue(database_url: str, principal_id: str, role: str) -> CompletedProcess[str]:
    return run_coalition("keys", "issue", principal_id, "--role", role, "--db", database_url)


def authenticate(engine: Engine, api_key: str) -> credentials.Principal | None:
    return credentials.authenticate(UnitOfWork(engine, read_only=True), api_key)


@pytest.mark.parametrize("role", ["partner", "merchant"])
def test_issue_prints_the_key_once_and_stores_only_its_hash(
    engine: Engine, database_url: str, role: str
) -> None:
    result = issue(database_url, PARTNER_WITH_MERCHANT_ROLE, role)

    assert result.returncode == 0, explain(result)
    api_key = result.stdout.strip()
    assert result.stdout == f"{api_key}\n"
    assert api_key not in result.stderr
    principal = authenticate(engine, api_key)
    assert principal is not None
    assert (principal.partner_id, principal.principal_id, principal.role) == (
        PARTNER_WITH_MERCHANT_ROLE,
        PARTNER_WITH_MERCHANT_ROLE,
        role,
    )
    assert f"key id:  {principal.key_id}" in result.stderr
    secret = api_key.split("_", 2)[2]
    with engine.connect() as connection:
        stored = connection.execute(select(api_keys)).one()
    assert stored.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    for value in text_values(database_url):  # every text column of every table
        assert api_key not in value
        assert secret not in value


def test_issue_honours_the_database_url_from_the_environment(
    engine: Engine, database_url: str
) -> None:
    result = run_coalition(
        "keys",
        "issue",
        PARTNER_WITH_MERCHANT_ROLE,
        "--role",
        "partner",
        environment_database_url=database_url,
    )

    assert result.returncode == 0, explain(result)
    assert authenticate(engine, result.stdout.strip()) is not None


def test_issue_for_an_unknown_partner_is_refused(engine: Engine, database_url: str) -> None:
    result = issue(database_url, "no-such-partner", "partner")

    assert result.returncode != 0, explain(result)
    assert "PARTNER_NOT_FOUND" in result.stderr
    assert "no-such-partner" in result.stderr
    assert result.stdout == ""
    assert count_rows(database_url, "api_keys") == 0


def test_a_merchant_key_for_a_partner_without_that_role_is_refused(
    engine: Engine, database_url: str
) -> None:
    result = issue(database_url, PARTNER_WITHOUT_MERCHANT_ROLE, "merchant")

    assert result.returncode != 0, explain(result)
    assert "ROLE_NOT_ALLOWED_FOR_PARTNER" in result.stderr
    assert result.stdout == ""
    assert count_rows(database_url, "api_keys") == 0


def test_revoke_makes_the_key_fail_authentication(engine: Engine, database_url: str) -> None:
    kept = issue(database_url, PARTNER_WITH_MERCHANT_ROLE, "partner")
    revoked = issue(database_url, PARTNER_WITH_MERCHANT_ROLE, "partner")
    kept_key, revoked_key = kept.stdout.strip(), revoked.stdout.strip()
    principal = authenticate(engine, revoked_key)
    assert principal is not None

    result = run_coalition("keys", "revoke", principal.key_id, "--db", database_url)

    assert result.returncode == 0, explain(result)
    assert f"revoked {principal.key_id}" in result.stdout
    assert authenticate(engine, revoked_key) is None
    assert authenticate(engine, kept_key) is not None

    again = run_coalition("keys", "revoke", principal.key_id, "--db", database_url)

    assert again.returncode != 0, explain(again)
    assert "API_KEY_NOT_FOUND" in again.stderr


def test_revoke_of_an_unknown_key_is_refused(engine: Engine, database_url: str) -> None:
    result = run_coalition("keys", "revoke", "0123456789abcdef", "--db", database_url)

    assert result.returncode != 0, explain(result)
    assert "API_KEY_NOT_FOUND" in result.stderr
