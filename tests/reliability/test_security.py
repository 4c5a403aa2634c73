"""Security: mutual TLS, per-partner rate limits, secrets kept out of logs, key hygiene.

Isolation and role checks that other suites already cover are listed in docs/reliability.md;
this file adds what was missing: TLS, rate limits, the log scan, the serve-time key check and
the role matrix. The per-RPC isolation sweep is test_isolation.py; keys, test_key_rotation.py.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine

from coalition.api.rate_limits import RateLimiter
from coalition.api.server import ROLES_BY_METHOD, SERVICE_DESCRIPTORS, Hub
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.settings import RateLimit, TlsFiles
from coalition.v1 import member_service_pb2, partner_service_pb2, partner_service_pb2_grpc
from tests.conftest import api_key
from tests.end_to_end.support import PartnerClient, bearer, failure_of, issue_key
from tests.process.commands import (
    COALITION,
    REPO_ROOT,
    environment,
    free_port,
    run_coalition,
    running_server,
)
from tests.reliability.certificates import TlsSetup, tls_setup

pytestmark = pytest.mark.reliability

CALL_TIMEOUT_SECONDS = 5.0


# Mutual TLS.


@pytest.fixture
def tls(tmp_path: Path) -> TlsSetup:
    return tls_setup(tmp_path)


@pytest.fixture
def tls_hub(engine: Engine, tls: TlsSetup) -> Iterator[Hub]:
    files = TlsFiles(tls.server_certificate, tls.server_key, tls.client_ca)
    hub = Hub(engine, "127.0.0.1:0", programme=DEFAULT_PROGRAMME, tls=files).start()
    yield hub
    hub.stop(grace_seconds=0)


def get_partner(
    channel: grpc.Channel, metadata: object = (), partner_id: str = "test-coffee"
) -> str:
    stub = partner_service_pb2_grpc.PartnerServiceStub(channel)
    response = stub.GetPartner(
        partner_service_pb2.GetPartnerRequest(partner_id=partner_id),
        metadata=metadata,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    return str(response.partner.partner_id)


def tls_channel(port: int, tls: TlsSetup, client_pem: tuple[bytes, bytes] | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.hub_ca_pem,
        private_key=None if client_pem is None else client_pem[1],
        certificate_chain=None if client_pem is None else client_pem[0],
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def test_mutual_tls_with_a_trusted_certificate_and_a_key_works(
    tls_hub: Hub, tls: TlsSetup, engine: Engine
) -> None:
    client = (tls.client.certificate_pem, tls.client.key_pem)
    with tls_channel(tls_hub.port, tls, client) as channel:
        assert get_partner(channel, api_key(engine, "test-coffee")) == "test-coffee"
        # The certificate proves the connection, not the caller: the API key is still needed.
        with pytest.raises(grpc.RpcError) as caught:
            get_partner(channel)
        assert failure_of(caught.value).reason == "API_KEY_MISSING"


@pytest.mark.parametrize("client", ["none", "unknown-ca"])
def test_mutual_tls_refuses_a_missing_or_untrusted_client_certificate(
    tls_hub: Hub, tls: TlsSetup, engine: Engine, client: str
) -> None:
    pem = None if client == "none" else (tls.stranger.certificate_pem, tls.stranger.key_pem)
    with tls_channel(tls_hub.port, tls, pem) as channel, pytest.raises(grpc.RpcError) as caught:
        get_partner(channel, api_key(engine, "test-coffee"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed


def test_a_valid_token_over_plaintext_reaches_nothing_on_a_tls_hub(
    tls_hub: Hub, engine: Engine
) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{tls_hub.port}") as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        get_partner(channel, api_key(engine, "test-coffee"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_serve_command_speaks_mutual_tls(
    engine: Engine, database_url: str, tls: TlsSetup, tmp_path: Path
) -> None:
    port = free_port()
    arguments = ["--db", database_url, "--listen", f"127.0.0.1:{port}"]
    tls_arguments = [
        "--tls-cert",
        str(tls.server_certificate),
        "--tls-key",
        str(tls.server_key),
        "--client-ca",
        str(tls.client_ca),
    ]
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [*COALITION, "serve", *arguments, *tls_arguments],
            cwd=REPO_ROOT,
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        client = (tls.client.certificate_pem, tls.client.key_pem)
        with tls_channel(port, tls, client) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_SECONDS
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        with tls_channel(port, tls, None) as channel, pytest.raises(grpc.RpcError) as caught:
            get_partner(channel, api_key(engine, "test-coffee"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        process.terminate()
        process.wait(timeout=15)
    half = run_coalition("serve", *arguments, "--tls-cert", str(tls.server_certificate))
    assert half.returncode == 1 and "go together" in half.stderr


# Rate limits.


def test_a_partner_over_its_rate_gets_resource_exhausted_and_others_do_not(
    engine: Engine,
) -> None:
    hub = Hub(
        engine, "127.0.0.1:0", programme=DEFAULT_PROGRAMME, rate_limit=RateLimit(1, 5)
    ).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
            coffee, air = api_key(engine, "test-coffee"), api_key(engine, "test-air")
            for _ in range(5):
                get_partner(channel, coffee)
            with pytest.raises(grpc.RpcError) as caught:
                get_partner(channel, coffee)
            failure = failure_of(caught.value)
            assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert failure.reason == "RATE_LIMITED" and "retry_after_seconds" in failure.metadata
            get_partner(channel, air, "test-air")  # a bucket per partner
            time.sleep(1.2)  # a little over one token's refill at 1 per second
            get_partner(channel, coffee)
    finally:
        hub.stop(grace_seconds=0)


def test_rate_limiter_memory_is_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(1, 1), buckets_max=100, clock=lambda: now[0])
    for index in range(10_000):
        limiter.take(f"partner-{index}")
    assert limiter.bucket_count() == 100


def test_serve_exports_the_rate_limit_to_its_workers(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    arguments = ["--db", database_url, "--rate-limit", "1", "--rate-limit-burst", "2"]
    with (
        running_server(arguments, tmp_path / "serve.log") as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        metadata = api_key(engine, "test-coffee")
        codes = []
        for _ in range(5):
            try:
                get_partner(channel, metadata)
                codes.append("OK")
            except grpc.RpcError as error:
                codes.append(error.code().name)
        assert codes.count("RESOURCE_EXHAUSTED") >= 1, codes


# Secrets and personal data never reach a log line.


def test_no_secret_or_personal_data_in_any_log_line(
    engine: Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity_secret = secrets.token_hex(32)
    monkeypatch.setenv("COALITION_IDENTITY_SECRET", identity_secret)  # read by the subprocess
    log_path = tmp_path / "serve.log"
    email, phone, name = "mei.lin.secret@example.com", "+8613800138000", "Mei Secretname"
    issued = issue_key(engine, "test-coffee")
    with (
        running_server(
            ["--db", database_url, "--access-log", "--log-format", "json"], log_path
        ) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        coffee = PartnerClient(channel, engine, "test-coffee")
        coffee.metadata = bearer(issued.api_key)
        member = coffee.call(
            "EnrollMember",
            member_service_pb2.EnrollMemberRequest(
                request_id="log-scan-1",
                partner_customer_id="cust-log-scan",
                display_name=name,
                email=email,
                phone=phone,
                birthday="1990-02-03",
            ),
        ).member.member_id
        coffee.earn(member, 10_000)
        for bad in ({"email": "not-an-email-secret@"}, {"phone": "12ab-secret"}):
            with pytest.raises(grpc.RpcError):
                coffee.call("ResolveMember", member_service_pb2.ResolveMemberRequest(**bad))
        forged = bearer(issued.api_key[:-4] + "AAAA")
        with pytest.raises(grpc.RpcError):
            get_partner(channel, forged)
        with pytest.raises(grpc.RpcError):
            get_partner(channel, bearer("totally-made-up-key-secret"))
    log = log_path.read_text(errors="replace")
    assert log.count("EnrollMember") >= 1, f"the access log logged nothing:\n{log[-2000:]}"
    sensitive = [
        identity_secret,
        issued.api_key,
        issued.api_key[:-4] + "AAAA",
        "totally-made-up-key-secret",
        email,
        phone,
        phone.lstrip("+"),
        name,
        "1990-02-03",
        "not-an-email-secret",
        "12ab-secret",
    ]
    leaked = [value for value in sensitive if value in log]
    assert not leaked, f"found in the log: {leaked}"
    assert not re.search(r"[Bb]earer\s+\S", log), "an authorization header reached the log"


def test_serve_refuses_a_world_readable_signing_key(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    key_path = tmp_path / "signing.pem"
    generated = run_coalition(
        "keys", "signing", "generate", "--signing-key", str(key_path), "--db", database_url
    )
    assert generated.returncode == 0, generated.stderr
    key_path.chmod(0o644)
    refused = run_coalition(
        "serve",
        "--db",
        database_url,
        "--signing-key",
        str(key_path),
        "--listen",
        f"127.0.0.1:{free_port()}",
        timeout_seconds=30,
    )
    assert refused.returncode != 0
    assert "chmod 600" in refused.stderr


# Roles: every RPC of every registered service, every role it does not allow.

ALL_ROLES = ("partner", "merchant", "finance", "admin")
PRINCIPAL_OF_ROLE = {
    "partner": "test-coffee",
    "merchant": "test-coffee",
    "finance": "roles-finance",
    "admin": "roles-admin",
}


def test_every_rpc_refuses_every_role_it_does_not_allow(engine: Engine) -> None:
    """Role checks come before anything else: an empty request from a disallowed role is
    PERMISSION_DENIED with ROLE_NOT_ALLOWED, for every RPC (new ones included)."""
    keys = {role: api_key(engine, PRINCIPAL_OF_ROLE[role], role) for role in ALL_ROLES}
    hub = Hub(engine, "127.0.0.1:0", programme=DEFAULT_PROGRAMME).start()
    checked = 0
    try:
        with grpc.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
            for service in SERVICE_DESCRIPTORS:
                for method in service.methods:
                    path = f"/{service.full_name}/{method.name}"
                    allowed = ROLES_BY_METHOD.get(path, frozenset())
                    for role in sorted(set(ALL_ROLES) - allowed):
                        with pytest.raises(grpc.RpcError) as caught:
                            call_empty(channel, path, method, keys[role])
                        failure = failure_of(caught.value)
                        assert (failure.code, failure.reason) == (
                            grpc.StatusCode.PERMISSION_DENIED,
                            "ROLE_NOT_ALLOWED",
                        ), f"{role} calling {path}"
                        checked += 1
    finally:
        hub.stop(grace_seconds=0)
    assert checked >= 50


def call_empty(channel: grpc.Channel, path: str, method: object, metadata: object) -> None:
    if method.client_streaming:  # type: ignore[attr-defined]
        channel.stream_unary(path)(iter([b""]), metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    elif method.server_streaming:  # type: ignore[attr-defined]
        for _response in channel.unary_stream(path)(
            b"", metadata=metadata, timeout=CALL_TIMEOUT_SECONDS
        ):
            raise AssertionError(f"{path} streamed to a disallowed role")
    else:
        channel.unary_unary(path)(b"", metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
