"""The hub's gRPC server: services, interceptor, health, reflection, graceful shutdown."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy import Engine, text

from coalition.api import reflection
from coalition.api.admission import Admission
from coalition.api.bounds import (
    CALLS_MAX,
    CALLS_PER_MEMBER_MAX,
    MESSAGE_BYTES_MAX,
    THREADS_PER_PROCESS,
)
from coalition.api.events import EventServicer
from coalition.api.interceptors import HubInterceptor
from coalition.api.members import MemberServicer
from coalition.api.partners import PartnerServicer
from coalition.api.points import PointsServicer
from coalition.api.promotions import PromotionServicer
from coalition.api.settlement import SettlementServicer
from coalition.api.tls import server_credentials
from coalition.domain.errors import Unavailable
from coalition.identity.secret import IdentitySecretError, hasher_for_engine
from coalition.observability.metrics import MetricsInterceptor, watch_engine_pool
from coalition.observability.process import configure_logs, configure_process
from coalition.operations.group_commit import COMMITTER_THREADS, Committer
from coalition.partners import credentials
from coalition.partners.credentials import Principal
from coalition.programme.config import Programme, configured_programme
from coalition.reconciliation.servicer import ReconciliationServicer
from coalition.scheduler.runner import Scheduler
from coalition.settings import (
    DEFAULT_GROUP_COMMIT,
    NO_IDENTITY_SECRET,
    GroupCommit,
    IdentitySecretSource,
    RateLimit,
    Settings,
    TlsFiles,
)
from coalition.settlement.service import Signer
from coalition.store.engine import create_database_engine
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import (
    event_service_pb2,
    event_service_pb2_grpc,
    member_service_pb2,
    member_service_pb2_grpc,
    partner_service_pb2,
    partner_service_pb2_grpc,
    points_service_pb2,
    points_service_pb2_grpc,
    promotion_service_pb2,
    promotion_service_pb2_grpc,
    reconciliation_service_pb2,
    reconciliation_service_pb2_grpc,
    settlement_service_pb2,
    settlement_service_pb2_grpc,
)

logger = logging.getLogger(__name__)

HEALTH_CHECK_INTERVAL_SECONDS = 2.0
SHUTDOWN_GRACE_SECONDS = 10.0
SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGINT}  # a hub process drains and exits 0 on either

SERVICE_DESCRIPTORS = (
    points_service_pb2.DESCRIPTOR.services_by_name["PointsService"],
    member_service_pb2.DESCRIPTOR.services_by_name["MemberService"],
    partner_service_pb2.DESCRIPTOR.services_by_name["PartnerService"],
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"],
    settlement_service_pb2.DESCRIPTOR.services_by_name["SettlementService"],
    reconciliation_service_pb2.DESCRIPTOR.services_by_name["ReconciliationService"],
    promotion_service_pb2.DESCRIPTOR.services_by_name["PromotionService"],
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICE_DESCRIPTORS)

PARTNER = frozenset({"partner"})
ADMIN = frozenset({"admin"})
GROUP_RECONCILERS = frozenset({"finance", "operations"})
# Who may call what. A method missing here is refused to everyone.
ROLES_BY_METHOD: dict[str, frozenset[str]] = {
    **{
        f"/coalition.v1.PointsService/{method.name}": PARTNER
        for method in SERVICE_DESCRIPTORS[0].methods
    },
    "/coalition.v1.MemberService/EnrollMember": PARTNER,
    "/coalition.v1.MemberService/LinkPartnerAccount": PARTNER,
    "/coalition.v1.MemberService/ResolveMember": PARTNER,
    "/coalition.v1.MemberService/GetReferralCode": PARTNER,
    "/coalition.v1.MemberService/GetMemberProfile": frozenset({"partner", "merchant"}),
    "/coalition.v1.EventService/Subscribe": PARTNER,
    "/coalition.v1.MemberService/UnlinkPartnerAccount": PARTNER,
    "/coalition.v1.MemberService/UpdateConsent": PARTNER,
    "/coalition.v1.MemberService/MergeMembers": ADMIN,
    "/coalition.v1.MemberService/ExportMemberData": ADMIN,
    "/coalition.v1.MemberService/ForgetMember": ADMIN,
    "/coalition.v1.PartnerService/GetPartner": frozenset({"admin", "partner", "merchant"}),
    "/coalition.v1.PartnerService/ListRateVersions": frozenset({"admin", "partner", "merchant"}),
    "/coalition.v1.PartnerService/ListPartners": frozenset({"admin", "finance"}),
    "/coalition.v1.PartnerService/CreateApiKey": ADMIN,
    "/coalition.v1.PartnerService/RevokeApiKey": ADMIN,
    "/coalition.v1.PartnerService/ReportDailySales": PARTNER,
    "/coalition.v1.PartnerService/GetContributionShare": frozenset(
        {"admin", "partner", "merchant"}
    ),
    # Settlement: a partner reads and acknowledges only its own statements (the servicer
    # checks ownership); the published signing keys are for everyone who verifies.
    "/coalition.v1.SettlementService/RunSettlement": frozenset({"finance"}),
    "/coalition.v1.SettlementService/GetSettlement": frozenset({"finance", "partner"}),
    "/coalition.v1.SettlementService/ListSettlements": frozenset({"finance", "partner"}),
    "/coalition.v1.SettlementService/ListSettlementEntries": frozenset({"finance", "partner"}),
    "/coalition.v1.SettlementService/AcknowledgeSettlement": PARTNER,
    "/coalition.v1.SettlementService/GetSigningKeys": frozenset(
        {"partner", "merchant", "finance", "admin"}
    ),
    # Reconciliation: a partner submits and reads only its own reports (the servicer scopes
    # them); finance and operations act for any partner and alone resolve exceptions.
    "/coalition.v1.ReconciliationService/SubmitPartnerReport": GROUP_RECONCILERS | PARTNER,
    "/coalition.v1.ReconciliationService/GetReconciliationRun": GROUP_RECONCILERS | PARTNER,
    "/coalition.v1.ReconciliationService/ListReconciliationExceptions": GROUP_RECONCILERS | PARTNER,
    "/coalition.v1.ReconciliationService/ResolveReconciliationException": GROUP_RECONCILERS,
    # Promotions: a partner its own (and reads the coalition's), the admin the coalition's;
    # the use cases check ownership (operations/promotion_admin.py).
    **{
        f"/coalition.v1.PromotionService/{method.name}": frozenset({"partner", "admin"})
        for method in promotion_service_pb2.DESCRIPTOR.services_by_name["PromotionService"].methods
    },
}


class Hub:
    """One hub process serving on `listen`; stateless apart from its database engine.

    `programme` is the process's (built once at start from its settings): the hub hands it to
    its committer and servicers, which pass it to every use case that reads it."""

    def __init__(
        self,
        engine: Engine,
        listen: str,
        signing_key_path: Path | None = None,
        *,
        programme: Programme,
        rate_limit: RateLimit | None = None,
        tls: TlsFiles | None = None,
        identity_secret: IdentitySecretSource = NO_IDENTITY_SECRET,
        group_commit: GroupCommit = DEFAULT_GROUP_COMMIT,
    ) -> None:
        # Loading the key refuses a file other users can read (SigningKeyError): the hub does
        # not start rather than sign with a key that may have leaked.
        signer = None if signing_key_path is None else Signer.from_file(signing_key_path)
        self._engine = engine
        self._identity_secret = identity_secret
        watch_engine_pool(engine)
        unit_of_work: Callable[..., UnitOfWork] = partial(UnitOfWork, engine)
        interceptor = HubInterceptor(
            lambda api_key: _authenticate(unit_of_work, api_key),
            ROLES_BY_METHOD,
            rate_limit,
            Admission(CALLS_MAX, CALLS_PER_MEMBER_MAX, _busy),
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=THREADS_PER_PROCESS),
            interceptors=[MetricsInterceptor(), interceptor],
            options=[
                ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
                ("grpc.so_reuseport", 1),
            ],
        )
        # Set by stop(): event streams end within one poll interval, inside the grace period.
        self._stopping = threading.Event()
        event_service_pb2_grpc.add_EventServiceServicer_to_server(
            EventServicer(unit_of_work, self._stopping), self._server
        )
        # Concurrent earns and burns of this process share database transactions (group
        # commit). SQLite serialises writers: more than one committer would only queue on it.
        self._committer = Committer(
            engine,
            programme,
            group_size_max=group_commit.size_max,
            window_seconds=group_commit.window_ms / 1000,
            threads=1 if engine.dialect.name == "sqlite" else COMMITTER_THREADS,
        )
        points_service_pb2_grpc.add_PointsServiceServicer_to_server(
            PointsServicer(unit_of_work, self._committer, programme), self._server
        )
        member_service_pb2_grpc.add_MemberServiceServicer_to_server(
            MemberServicer(
                unit_of_work, programme, partial(hasher_for_engine, engine, identity_secret)
            ),
            self._server,
        )
        partner_service_pb2_grpc.add_PartnerServiceServicer_to_server(
            PartnerServicer(unit_of_work), self._server
        )
        settlement_service_pb2_grpc.add_SettlementServiceServicer_to_server(
            SettlementServicer(unit_of_work, signer), self._server
        )
        reconciliation_service_pb2_grpc.add_ReconciliationServiceServicer_to_server(
            ReconciliationServicer(unit_of_work), self._server
        )
        promotion_service_pb2_grpc.add_PromotionServiceServicer_to_server(
            PromotionServicer(unit_of_work, programme), self._server
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME), self._server)
        # With TLS files the hub demands a client certificate from the given CA (mutual TLS).
        self.port = (
            self._server.add_insecure_port(listen)
            if tls is None
            else self._server.add_secure_port(listen, server_credentials(tls))
        )
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}")
        self._monitor = threading.Thread(target=self._watch_database, daemon=True)

    def start(self) -> Hub:
        self._set_serving(self._database_reachable())
        self._server.start()
        self._monitor.start()
        logger.info("hub serving on port %d", self.port)
        self._warn_without_identity_secret()
        return self

    def _warn_without_identity_secret(self) -> None:
        """Say at start, not at the first enrolment, that identifiers cannot be accepted.

        The hub still serves: earn, burn and enrolment by customer id need no secret.
        """
        try:
            hasher_for_engine(self._engine, self._identity_secret)
        except IdentitySecretError as error:
            logger.warning(
                "no identity secret: requests with an email or phone will be refused "
                "FAILED_PRECONDITION/IDENTITY_SECRET_NOT_CONFIGURED (%s)",
                error,
            )

    def stop(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Refuse new calls, let running ones finish for up to `grace_seconds`."""
        self._stopping.set()
        self._set_serving(False)
        self._server.stop(grace_seconds).wait()
        self._committer.stop()
        self._monitor.join(timeout=HEALTH_CHECK_INTERVAL_SECONDS * 2)

    def wait(self) -> None:
        self._server.wait_for_termination()

    def _watch_database(self) -> None:
        while not self._stopping.wait(HEALTH_CHECK_INTERVAL_SECONDS):
            self._set_serving(self._database_reachable())

    def _database_reachable(self) -> bool:
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception as error:  # any failure to reach the database means not serving
            logger.warning("database unreachable: %s", error)
            return False

    def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving and not self._stopping.is_set()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service_name in ("", *SERVICE_NAMES):
            self._health.set(service_name, status)


def _busy(key: str | None) -> Unavailable:
    """The refusal of a call over an admission bound: retryable, and it names no member."""
    if key is None:
        return Unavailable(
            "HUB_BUSY",
            f"this hub process already serves {CALLS_MAX} calls; retry",
            {"calls_max": CALLS_MAX},
        )
    return Unavailable(
        "MEMBER_BUSY",
        f"{CALLS_PER_MEMBER_MAX} calls on the same member, hold or transaction are already in "
        "flight on this hub process; retry",
        {"calls_per_member_max": CALLS_PER_MEMBER_MAX},
    )


def _authenticate(unit_of_work: Callable[..., UnitOfWork], api_key: str) -> Principal | None:
    return credentials.authenticate(unit_of_work(read_only=True), api_key)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; with several workers, one process each on one port,
    each given `settings` (spawned: pickled as the process's argument)."""
    signing_key_path = settings.signing_key_path
    if signing_key_path is not None:
        Signer.from_file(signing_key_path)  # refuse to start before any worker does
    if settings.workers == 1:
        _serve_in_this_process(settings)
        return
    configure_logs(settings.observability)  # the parent serves no RPC: only its log lines
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_serve_in_this_process, args=(settings,))
        for _ in range(settings.workers)
    ]

    def forward(signal_number: int, _frame: object) -> None:
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal_number)

    # Handlers first: a SIGTERM arriving while workers start must still reach all of them.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for process in processes:
        process.start()
    _supervise(processes, forward)


def _supervise(processes: Sequence[BaseProcess], forward: Callable[[int, object], None]) -> None:
    """Wait for the workers; when one dies, stop the others; fail when any failed.

    A worker that ends on its own (it could not bind, or crashed) leaves the port half served,
    so the whole hub stops and the command reports it instead of exiting 0.
    """
    running = list(processes)
    while running:
        multiprocessing.connection.wait([process.sentinel for process in running])
        ended = [process for process in running if process.exitcode is not None]
        running = [process for process in running if process.exitcode is None]
        if running and any(process.exitcode != 0 for process in ended):
            forward(signal.SIGTERM, None)
    failed = [p for p in processes if p.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed:
        raise RuntimeError(
            ", ".join(f"worker {p.pid} exited with code {p.exitcode}" for p in failed)
        )


# Calls allocate thousands of short-lived containers each: at CPython's default of 700
# allocations between young collections, a 1,000-earn batch ran ~440 collections, about 18%
# of its CPU (docs/benchmarks.md, 2026-12-03).
YOUNG_COLLECTION_ALLOCATIONS = 20_000


def _settle_heap() -> None:
    """Freeze what the started hub holds (modules, metadata, descriptors: ~90,000 objects that
    live as long as the process, which collections would otherwise scan again and again), and
    collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, middle, oldest)


def _serve_in_this_process(settings: Settings) -> None:
    # Blocked before any thread starts (threads inherit the mask), and taken by the main
    # thread with sigwait once the hub serves: a signal sent during start-up (on the serving
    # line, as supervisors and tests do) waits for it and drains, instead of interrupting the
    # start-up; and no handler runs in the middle of other code (an Event set from a handler
    # deadlocks when the signal lands while its own thread holds the Event's lock in wait).
    signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
    configure_process(settings.observability)  # logs and /metrics of this worker
    # Built once per process, here: the hub and the scheduler hold it and pass it down.
    programme = configured_programme(settings.programme_directory, settings.referral)
    engine = create_database_engine(settings.database_url)
    hub = Hub(
        engine,
        settings.listen,
        settings.signing_key_path,
        programme=programme,
        rate_limit=settings.rate_limit,
        tls=settings.tls,
        identity_secret=settings.identity_secret,
        group_commit=settings.group_commit,
    ).start()
    intervals = settings.job_intervals  # `coalition serve --jobs`
    scheduler = (
        None if intervals is None else Scheduler(partial(UnitOfWork, engine), intervals, programme)
    )
    if scheduler is not None:
        scheduler.start()
    _settle_heap()
    signal.sigwait(SHUTDOWN_SIGNALS)
    logger.info("shutting down: draining calls for up to %.0f s", SHUTDOWN_GRACE_SECONDS)
    if scheduler is not None:
        scheduler.stop()
    hub.stop()
    engine.dispose()
