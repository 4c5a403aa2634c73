"""Key rotation and revocation: partners' API keys and the hub's statement signing key.

API keys: a partner rotates (a second key issued over gRPC by an admin and by `coalition keys
issue`, the first revoked over gRPC and by `coalition keys revoke`) without an outage and
without a restart; a revoked key is refused on every service, within the interceptor's
principal cache window on a hub that has just used it (measured, with the production
setting) and at once where that cache is empty; revoking again neither succeeds nor revives
it; partners can neither issue nor revoke keys, their own or another partner's; a key acts
only as its own partner.

Signing keys, through the real commands (`keys signing generate/rotate/list`, `settle
run/export/verify`) and `GetSigningKeys`: statements signed before a rotation still verify
offline with the retired key, the next statement carries the new key id and chains to the
last one of the old key, both public keys stay published, the rotated private key file is
owner-only, the retired key cannot sign any more, and no statement verifies under the wrong
key or with a rewritten key id. The service-level rotation checks live in
tests/settlement/test_statements.py; these add the commands, the API and the offline checks.
"""

from __future__ import annotations

import base64
import json
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, select

from coalition.api import interceptors
from coalition.api.server import SERVICE_DESCRIPTORS
from coalition.partners.credentials import IssuedKey
from coalition.settlement import signing
from coalition.settlement.canonical import canonical_bytes
from coalition.settlement.export import STATEMENT_FILE
from coalition.store.schema import api_keys
from coalition.v1 import (
    common_pb2,
    event_service_pb2,
    member_service_pb2,
    partner_service_pb2,
    points_service_pb2,
    promotion_service_pb2,
    reconciliation_service_pb2,
    settlement_service_pb2,
)
from tests.conftest import api_key
from tests.end_to_end.support import (
    bearer,
    expect_failure,
    failure_of,
    issue_key,
    new_id,
    serving,
)
from tests.process.commands import explain, run_coalition
from tests.reconciliation.conftest import Ledger as ReportLedger
from tests.reconciliation.conftest import as_csv
from tests.reconciliation.test_api import messages_of
from tests.reliability.test_isolation import Caller, by_customer
from tests.settlement.conftest import Ledger as PastLedger
from tests.settlement.test_commands import run
from tests.settlement.test_statements import january_traffic

pytestmark = pytest.mark.reliability

A = "test-coffee"
B = "test-air"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
REVOKED = "UNAUTHENTICATED/API_KEY_INVALID"
SERVICES = tuple(service.name for service in SERVICE_DESCRIPTORS)
POLL_INTERVAL_SECONDS = 0.05
# How late a refusal may be observed after the cache entry expires: one poll, one call.
CACHE_WINDOW_TOLERANCE_SECONDS = 1.0


# API keys: one call per service, answered as the key's partner.


@dataclass(frozen=True)
class PartnerA:
    """A's member (by A's customer id), an earn, and a reconciliation run of A's."""

    customer_id: str
    member_id: str
    earn_transaction_id: str
    run_id: str


def served_partner_a(channel: grpc.Channel, engine: Engine) -> PartnerA:
    a = Caller(channel, api_key(engine, A))
    customer_id = f"a-{new_id()}"
    enrolment = member_service_pb2.EnrollMemberRequest(
        request_id=new_id(), partner_customer_id=customer_id
    )
    member_id = str(a("EnrollMember", enrolment).member.member_id)
    earn = points_service_pb2.EarnRequest(
        request_id=new_id(),
        member=by_customer(customer_id),
        spend=common_pb2.Money(amount_minor=10_000, currency="CNY"),
    )
    earned = a("Earn", earn)
    rows = ReportLedger(engine, {}, datetime.now(UTC), datetime.now(UTC)).report_rows(A)
    run_of_a = a("SubmitPartnerReport", messages_of(as_csv(rows))).run
    return PartnerA(customer_id, member_id, str(earned.transaction.transaction_id), run_of_a.run_id)


def first_event_transaction_id(caller: Caller) -> str:
    stream = caller("Subscribe", event_service_pb2.SubscribeRequest())
    try:
        return str(next(iter(stream)).event.transaction_id)
    finally:
        stream.cancel()


def answers_on_every_service(caller: Caller, a: PartnerA) -> dict[str, str]:
    """Per service, what one call with this key shows of its partner, or the refusal."""
    probes: dict[str, Callable[[], object]] = {
        "PointsService": lambda: ",".join(
            sorted(
                {
                    t.partner_id
                    for t in caller(
                        "ListTransactions", points_service_pb2.ListTransactionsRequest()
                    ).transactions
                }
            )
        ),
        "MemberService": lambda: (
            caller(
                "ResolveMember",
                member_service_pb2.ResolveMemberRequest(partner_customer_id=a.customer_id),
            ).member_id
        ),
        "PartnerService": lambda: (
            caller(
                "GetPartner", partner_service_pb2.GetPartnerRequest(partner_id=A)
            ).partner.partner_id
        ),
        "EventService": lambda: first_event_transaction_id(caller),
        "SettlementService": lambda: len(
            caller("ListSettlements", settlement_service_pb2.ListSettlementsRequest()).statements
        ),
        "ReconciliationService": lambda: (
            caller(
                "GetReconciliationRun",
                reconciliation_service_pb2.GetReconciliationRunRequest(run_id=a.run_id),
            ).run.partner_id
        ),
        # A runs no promotion of its own here; the answer shows the key was served.
        "PromotionService": lambda: len(
            caller("ListPromotions", promotion_service_pb2.ListPromotionsRequest()).promotions
        ),
    }
    assert set(probes) == set(SERVICES)
    answers = {}
    for service, probe in probes.items():
        try:
            answers[service] = str(probe())
        except grpc.RpcError as error:
            failure = failure_of(error)
            answers[service] = f"{failure.code.name}/{failure.reason}"
    return answers


def served_as_a(a: PartnerA) -> dict[str, str]:
    return {
        "PointsService": A,
        "MemberService": a.member_id,
        "PartnerService": A,
        "EventService": a.earn_transaction_id,
        "SettlementService": "0",
        "ReconciliationService": A,
        "PromotionService": "0",
    }


def refused_everywhere() -> dict[str, str]:
    return dict.fromkeys(SERVICES, REVOKED)


def create_key_over_grpc(admin: Caller, principal_id: str) -> IssuedKey:
    created = admin(
        "CreateApiKey",
        partner_service_pb2.CreateApiKeyRequest(
            principal_id=principal_id, role=partner_service_pb2.ROLE_PARTNER
        ),
    )
    return IssuedKey(key_id=created.key_id, api_key=created.api_key)


def issue_key_with_the_cli(database_url: str, principal_id: str) -> IssuedKey:
    issued = run_coalition("keys", "issue", principal_id, "--role", "partner", "--db", database_url)
    assert issued.returncode == 0, explain(issued)
    api_key_text = issued.stdout.strip()
    return IssuedKey(key_id=api_key_text.split("_")[1], api_key=api_key_text)


def revoke_time_of(engine: Engine, key_id: str) -> datetime | None:
    with engine.connect() as connection:
        return connection.execute(
            select(api_keys.c.revoke_time).where(api_keys.c.key_id == key_id)
        ).scalar_one()


def every_api_key(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(select(api_keys).order_by(api_keys.c.key_id))
        return [tuple(row) for row in rows]


@pytest.fixture
def admin(channel: grpc.Channel, engine: Engine) -> Caller:
    return Caller(channel, api_key(engine, "key-rotation-admin", "admin"))


@pytest.fixture
def partner_a(channel: grpc.Channel, engine: Engine) -> PartnerA:
    return served_partner_a(channel, engine)


@pytest.mark.usefixtures("no_principal_cache")
def test_a_partner_rotates_its_key_over_grpc_and_the_cli_without_an_outage(
    channel: grpc.Channel, engine: Engine, database_url: str, admin: Caller, partner_a: PartnerA
) -> None:
    first = issue_key(engine, A)
    second = create_key_over_grpc(admin, A)
    third = issue_key_with_the_cli(database_url, A)
    callers = {key.key_id: Caller(channel, bearer(key.api_key)) for key in (first, second, third)}
    for caller in callers.values():
        assert answers_on_every_service(caller, partner_a) == served_as_a(partner_a)

    revoked = admin("RevokeApiKey", partner_service_pb2.RevokeApiKeyRequest(key_id=first.key_id))
    assert revoked.revoke_time.ToDatetime(tzinfo=UTC) == revoke_time_of(engine, first.key_id)
    assert answers_on_every_service(callers[first.key_id], partner_a) == refused_everywhere()
    for key in (second, third):
        assert answers_on_every_service(callers[key.key_id], partner_a) == served_as_a(partner_a)

    by_cli = run_coalition("keys", "revoke", second.key_id, "--db", database_url)
    assert by_cli.returncode == 0, explain(by_cli)
    assert answers_on_every_service(callers[second.key_id], partner_a) == refused_everywhere()
    assert answers_on_every_service(callers[third.key_id], partner_a) == served_as_a(partner_a)


@pytest.mark.usefixtures("no_principal_cache")
def test_revoking_a_revoked_key_again_is_refused_and_does_not_revive_it(
    channel: grpc.Channel, engine: Engine, database_url: str, admin: Caller, partner_a: PartnerA
) -> None:
    """RevokeApiKey answers NOT_FOUND / API_KEY_NOT_FOUND for a key that is not active (it is
    not an idempotent success); the first revocation time stays, the key stays refused."""
    key = issue_key(engine, A)
    revoke = partner_service_pb2.RevokeApiKeyRequest(key_id=key.key_id)
    admin("RevokeApiKey", revoke)
    revoked_at = revoke_time_of(engine, key.key_id)
    failure = expect_failure(
        lambda: admin("RevokeApiKey", revoke), grpc.StatusCode.NOT_FOUND, "API_KEY_NOT_FOUND"
    )
    assert failure.metadata == {"key_id": key.key_id}
    again = run_coalition("keys", "revoke", key.key_id, "--db", database_url)
    assert again.returncode != 0 and "API_KEY_NOT_FOUND" in again.stderr, explain(again)
    assert revoke_time_of(engine, key.key_id) == revoked_at
    caller = Caller(channel, bearer(key.api_key))
    assert answers_on_every_service(caller, partner_a) == refused_everywhere()


def seconds_until_refused(caller: Caller, timeout_seconds: float) -> float:
    """Call GetPartner until the key is refused; the seconds that took (deadline-bounded)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_seconds:
        try:
            caller("GetPartner", partner_service_pb2.GetPartnerRequest(partner_id=A))
        except grpc.RpcError as error:
            failure = failure_of(error)
            assert (failure.code, failure.reason) == (UNAUTHENTICATED, "API_KEY_INVALID")
            return time.monotonic() - start
        time.sleep(POLL_INTERVAL_SECONDS)
    raise AssertionError(f"the revoked key still worked {timeout_seconds} s after revocation")


def test_a_revoked_key_is_refused_by_a_running_hub_within_the_principal_cache_window(
    channel: grpc.Channel, engine: Engine, database_url: str, partner_a: PartnerA
) -> None:
    """The production setting: the interceptor remembers a key's principal for
    PRINCIPAL_CACHE_SECONDS, so a hub that has just served a key may accept it that long
    after its revocation (by design, api/interceptors.py). Revoked by another process (the
    CLI), the key must be refused within that window on the running hub, with no restart, and
    at once by a hub process that had not cached it."""
    window_seconds = interceptors.PRINCIPAL_CACHE_SECONDS
    assert 0 < window_seconds <= 2, "revocation must take effect within two seconds"
    key = issue_key(engine, A)
    caller = Caller(channel, bearer(key.api_key))
    assert answers_on_every_service(caller, partner_a) == served_as_a(partner_a)
    # The hub cached the key before this instant: the entry expires within the window after it.
    last_served = time.monotonic()

    revoked = run_coalition("keys", "revoke", key.key_id, "--db", database_url)
    assert revoked.returncode == 0, explain(revoked)
    with serving(engine) as other_hub:
        other = Caller(other_hub, bearer(key.api_key))
        assert answers_on_every_service(other, partner_a) == refused_everywhere()

    seconds_until_refused(caller, window_seconds + 5)
    stale_for = time.monotonic() - last_served
    assert stale_for <= window_seconds + CACHE_WINDOW_TOLERANCE_SECONDS, stale_for
    assert answers_on_every_service(caller, partner_a) == refused_everywhere()


def test_partner_keys_can_neither_issue_nor_revoke_keys_their_own_or_others(
    channel: grpc.Channel, engine: Engine
) -> None:
    a_key, b_key = issue_key(engine, A), issue_key(engine, B)
    callers = [
        Caller(channel, bearer(a_key.api_key)),
        Caller(channel, bearer(b_key.api_key)),
        Caller(channel, api_key(engine, A, "merchant")),
    ]
    keys_before = every_api_key(engine)
    for caller in callers:
        for key_id in (a_key.key_id, b_key.key_id):
            revoke = partner_service_pb2.RevokeApiKeyRequest(key_id=key_id)
            expect_failure(
                partial(caller, "RevokeApiKey", revoke),
                PERMISSION_DENIED,
                "ROLE_NOT_ALLOWED",
            )
        for principal_id in (A, B):
            create = partner_service_pb2.CreateApiKeyRequest(
                principal_id=principal_id, role=partner_service_pb2.ROLE_ADMIN
            )
            expect_failure(
                partial(caller, "CreateApiKey", create),
                PERMISSION_DENIED,
                "ROLE_NOT_ALLOWED",
            )
    assert every_api_key(engine) == keys_before  # none added, none revoked
    for caller, partner_id in zip(callers, (A, B, A), strict=True):
        request = partner_service_pb2.GetPartnerRequest(partner_id=partner_id)
        assert caller("GetPartner", request).partner.partner_id == partner_id


def test_a_key_acts_only_as_its_own_partner(channel: grpc.Channel, engine: Engine) -> None:
    a_key, b_key = issue_key(engine, A), issue_key(engine, B)
    for own, other, key in ((A, B, a_key), (B, A, b_key)):
        caller = Caller(channel, bearer(key.api_key))
        own_record = caller("GetPartner", partner_service_pb2.GetPartnerRequest(partner_id=own))
        assert own_record.partner.partner_id == own
        expect_failure(
            partial(caller, "GetPartner", partner_service_pb2.GetPartnerRequest(partner_id=other)),
            grpc.StatusCode.NOT_FOUND,
            "PARTNER_NOT_FOUND",
        )
    # A key id with another key's secret is no key at all.
    a_secret, b_secret = (key.api_key.split("_", 2)[2] for key in (a_key, b_key))
    for mixed in (f"coal_{a_key.key_id}_{b_secret}", f"coal_{b_key.key_id}_{a_secret}"):
        stranger = Caller(channel, bearer(mixed))
        expect_failure(
            partial(stranger, "GetPartner", partner_service_pb2.GetPartnerRequest(partner_id=A)),
            UNAUTHENTICATED,
            "API_KEY_INVALID",
        )


# Signing keys.


@dataclass(frozen=True)
class Rotation:
    """January signed by the first key, the key rotated, February signed by the new key."""

    key_path: Path
    retired_key_copy: Path  # the first private key, kept aside before the rotation
    january: Path  # exported statement directories
    february: Path
    retired_public_key: bytes
    new_public_key: bytes


def cli(*arguments: str) -> None:
    assert run(*arguments) == 0, f"coalition {' '.join(arguments)} failed"


def settle_and_export(database_url: str, key_path: Path, period: str, out: Path) -> Path:
    signing_key = ("--signing-key", str(key_path))
    cli("settle", "run", "--period", period, "--partner", A, *signing_key, "--db", database_url)
    statement_id = f"{A}-{period.replace('-', '')}"
    cli("settle", "export", statement_id, "--out", str(out), "--db", database_url)
    return out


@pytest.fixture
def rotation(engine: Engine, database_url: str, tmp_path: Path) -> Rotation:
    january_traffic(PastLedger(engine))
    key_path = tmp_path / "keys" / "hub.pem"
    cli("keys", "signing", "generate", "--signing-key", str(key_path), "--db", database_url)
    retired_public_key = signing.parse_public_key(key_path.with_suffix(".pub").read_bytes())
    retired_key_copy = tmp_path / "retired.pem"
    shutil.copy2(key_path, retired_key_copy)
    january = settle_and_export(database_url, key_path, "2026-01-31", tmp_path / "january")
    cli("keys", "signing", "rotate", "--signing-key", str(key_path), "--db", database_url)
    february = settle_and_export(database_url, key_path, "2026-02-28", tmp_path / "february")
    return Rotation(
        key_path=key_path,
        retired_key_copy=retired_key_copy,
        january=january,
        february=february,
        retired_public_key=retired_public_key,
        new_public_key=signing.parse_public_key(key_path.with_suffix(".pub").read_bytes()),
    )


def body_of(directory: Path) -> dict[str, object]:
    document = json.loads((directory / STATEMENT_FILE).read_bytes())
    body: dict[str, object] = document["body"]
    return body


def public_key_file(directory: Path, public_key: bytes) -> Path:
    path = directory / f"{signing.key_id_of(public_key)[:12]}.pub"
    path.write_bytes(signing.public_key_pem(public_key))
    return path


def verify_offline(directory: Path, public_key: Path, previous: Path | None = None) -> list[str]:
    """`coalition settle verify` as an auditor runs it: another process, no database. Its
    FAILED lines (none when it verified)."""
    arguments = ["settle", "verify", str(directory), "--public-key", str(public_key)]
    if previous is not None:
        arguments += ["--previous", str(previous)]
    result = run_coalition(*arguments)
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    verified = result.returncode == 0
    assert verified == (not failed) == ("verified" in result.stdout), explain(result)
    return failed


def test_a_statement_signed_before_the_rotation_still_verifies_offline(
    rotation: Rotation, tmp_path: Path, channel: grpc.Channel, engine: Engine
) -> None:
    """The retired public key, as GetSigningKeys publishes it, verifies January offline."""
    caller = Caller(channel, api_key(engine, A))
    published = caller("GetSigningKeys", settlement_service_pb2.GetSigningKeysRequest())
    retired = next(k for k in published.signing_keys if k.HasField("valid_until"))
    assert retired.public_key == rotation.retired_public_key
    assert verify_offline(rotation.january, public_key_file(tmp_path, retired.public_key)) == []


def test_the_next_statement_carries_the_new_key_and_chains_to_the_last_old_one(
    rotation: Rotation, tmp_path: Path, channel: grpc.Channel, engine: Engine
) -> None:
    january, february = body_of(rotation.january), body_of(rotation.february)
    assert january["signing_key_id"] == signing.key_id_of(rotation.retired_public_key)
    assert february["signing_key_id"] == signing.key_id_of(rotation.new_public_key)
    assert (january["sequence_number"], february["sequence_number"]) == ("1", "2")
    january_hash = json.loads((rotation.january / STATEMENT_FILE).read_bytes())["statement_hash"]
    assert february["previous_statement_hash"] == january_hash
    new_key = public_key_file(tmp_path, rotation.new_public_key)
    assert verify_offline(rotation.february, new_key, previous=rotation.january) == []
    # The hub tells the same story over the API.
    caller = Caller(channel, api_key(engine, A))
    statement = caller(
        "GetSettlement", settlement_service_pb2.GetSettlementRequest(statement_id=f"{A}-20260228")
    ).statement
    assert (statement.signing_key_id, statement.previous_statement_hash) == (
        february["signing_key_id"],
        january_hash,
    )


def test_both_public_keys_stay_published_the_new_one_active(
    rotation: Rotation,
    channel: grpc.Channel,
    engine: Engine,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caller = Caller(channel, api_key(engine, B, "partner"))
    published = caller("GetSigningKeys", settlement_service_pb2.GetSigningKeysRequest())
    assert [
        (k.key_id, k.public_key, k.HasField("valid_until")) for k in published.signing_keys
    ] == [
        (signing.key_id_of(rotation.retired_public_key), rotation.retired_public_key, True),
        (signing.key_id_of(rotation.new_public_key), rotation.new_public_key, False),
    ]
    retired, active = published.signing_keys
    assert retired.valid_until == active.valid_from
    capsys.readouterr()
    cli("keys", "signing", "list", "--db", database_url)
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [(line[0], line[4], line[-1]) for line in listed] == [
        (retired.key_id, "until", base64.b64encode(retired.public_key).decode()),
        (active.key_id, "active", base64.b64encode(active.public_key).decode()),
    ]


def test_the_rotated_private_key_is_owner_only_and_the_retired_one_cannot_sign(
    rotation: Rotation, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stat.S_IMODE(rotation.key_path.stat().st_mode) == 0o600
    assert not rotation.key_path.with_name(rotation.key_path.name + ".new").exists()
    assert signing.raw_public_key(signing.load_private_key(rotation.key_path)) == (
        rotation.new_public_key
    )
    capsys.readouterr()
    settle = ("settle", "run", "--period", "2026-03-31", "--partner", A, "--db", database_url)
    assert run(*settle, "--signing-key", str(rotation.retired_key_copy)) == 1
    assert "SIGNING_KEY_NOT_ACTIVE" in capsys.readouterr().err


def with_key_id(source: Path, destination: Path, key_id: str) -> Path:
    """A copy of the export whose statement names another signing key (nothing re-signed)."""
    shutil.copytree(source, destination)
    document = json.loads((destination / STATEMENT_FILE).read_bytes())
    document["body"]["signing_key_id"] = key_id
    (destination / STATEMENT_FILE).write_bytes(canonical_bytes(document))
    return destination


def failed_checks(
    directory: Path, public_key: Path, capsys: pytest.CaptureFixture[str]
) -> list[str]:
    """The FAILED lines of `coalition settle verify`, run in this process (faster than
    `verify_offline`, same command)."""
    capsys.readouterr()
    code = run("settle", "verify", str(directory), "--public-key", str(public_key))
    failed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAILED")]
    assert (code == 0) == (not failed)
    return failed


def test_no_statement_verifies_under_the_wrong_key_or_a_rewritten_key_id(
    rotation: Rotation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    retired = public_key_file(tmp_path, rotation.retired_public_key)
    new = public_key_file(tmp_path, rotation.new_public_key)
    for directory, wrong_key in ((rotation.january, new), (rotation.february, retired)):
        failed = failed_checks(directory, wrong_key, capsys)
        assert any(line.startswith("FAILED signing key") for line in failed), failed
        assert any(line.startswith("FAILED signature") for line in failed), failed
    claims_new_key = with_key_id(
        rotation.january, tmp_path / "claims-new", signing.key_id_of(rotation.new_public_key)
    )
    for public_key in (new, retired):
        failed = failed_checks(claims_new_key, public_key, capsys)
        assert any(line.startswith("FAILED statement hash") for line in failed), failed
        assert any(line.startswith("FAILED signature") for line in failed), failed
