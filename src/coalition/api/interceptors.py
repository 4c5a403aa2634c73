"""The server interceptor: authentication, authorisation and error mapping for every RPC.

Servicers never parse credentials: they read the caller from `current_principal()`, which the
interceptor sets around the servicer's own call (in the thread that runs it).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import grpc
from sqlalchemy.exc import DBAPIError, OperationalError

from coalition.api.admission import Admission, contended_key
from coalition.api.errors import internal_status, status_of
from coalition.api.rate_limits import RateLimit, RateLimiter
from coalition.domain.errors import (
    CoalitionError,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from coalition.observability.context import note_partner
from coalition.partners.credentials import Principal
from coalition.store import deadlines

logger = logging.getLogger(__name__)

_current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
_current_key_check: contextvars.ContextVar[Callable[[], object]] = contextvars.ContextVar(
    "key_check"
)

# Revoked keys stop working within this many seconds on every hub process. Short, because a
# revocation is usually urgent; a partner's steady traffic still costs each process one key
# lookup per window.
PRINCIPAL_CACHE_SECONDS = 2.0
PRINCIPAL_CACHE_ENTRIES_MAX = 10_000
# Unknown API keys one client address may present: each costs a key lookup, and beyond this
# the address is refused (RATE_LIMITED) without one. Valid keys never count.
FAILED_AUTHENTICATIONS_PER_PEER = RateLimit(requests_per_second=5.0, burst_requests=20)
# Health and reflection are open, as load balancers and tools expect.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def current_principal() -> Principal:
    return _current_principal.get()


def caller_partner_id() -> str:
    """The partner a partner-scoped caller (roles partner, merchant) acts as."""
    partner_id = current_principal().partner_id
    assert partner_id is not None, "partner-scoped roles always belong to a partner"
    return partner_id


# Without a deadline a call's time_remaining() is about 2**63 ns away; beyond a day, call it none.
DEADLINE_SECONDS_MAX = 24 * 3600.0


class HubInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        authenticate: Callable[[str], Principal | None],
        roles_by_method: Mapping[str, frozenset[str]],
        rate_limit: RateLimit | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._rate_limiter = None if rate_limit is None else RateLimiter(rate_limit)
        self._admission = admission
        self._failed_authentications = RateLimiter(FAILED_AUTHENTICATIONS_PER_PEER)
        self._roles_by_method = roles_by_method
        self._principals: dict[str, tuple[Principal | None, float]] = {}
        self._principals_lock = threading.Lock()

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        roles = self._roles_by_method.get(method, frozenset())
        return _wrap_handler(
            handler,
            lambda behavior: self._guard(behavior, method, roles, metadata),
            lambda behavior: self._guard_stream(behavior, method, roles, metadata),
        )

    def _guard(
        self,
        behavior: Callable[..., Any],
        method: str,
        roles: frozenset[str],
        metadata: dict[str, Any],
    ) -> Callable[..., Any]:
        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                principal = self._authorised(metadata, method, roles, request, context.peer())
                token = _current_principal.set(principal)
                try:
                    with self._admitted(request, principal), _deadline_of(context):
                        return behavior(_checked_stream(request), context)
                finally:
                    _current_principal.reset(token)
            except Exception as error:
                context.abort_with_status(_status_of_failure(error, method))

        return guarded

    def _guard_stream(
        self,
        behavior: Callable[..., Iterator[Any]],
        method: str,
        roles: frozenset[str],
        metadata: dict[str, Any],
    ) -> Callable[..., Iterator[Any]]:
        """The guard of server-streaming RPCs: the same checks and error mapping as `_guard`,
        around the whole iteration, since a stream fails while it is consumed, not when the
        servicer returns its generator."""

        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                peer = context.peer()
                principal = self._authorised(metadata, method, roles, request, peer)
                token = _current_principal.set(principal)
                recheck = _current_key_check.set(lambda: self._identified(metadata, peer))
                try:
                    with _deadline_of(context):  # streams are admitted by their servicer
                        yield from behavior(request, context)
                finally:
                    _current_key_check.reset(recheck)
                    _current_principal.reset(token)
            except Exception as error:
                context.abort_with_status(_status_of_failure(error, method))

        return guarded

    def _admitted(self, request: Any, principal: Principal) -> AbstractContextManager[None]:
        if self._admission is None:
            return nullcontext()
        return self._admission.admitted(contended_key(request, principal.partner_id))

    def _authorised(
        self,
        metadata: dict[str, Any],
        method: str,
        roles: frozenset[str],
        request: Any,
        peer: str,
    ) -> Principal:
        principal = self._principal(metadata, peer)
        if principal.role not in roles:
            raise PermissionDenied(
                "ROLE_NOT_ALLOWED",
                f"role {principal.role!r} may not call {method}",
                {"role": principal.role, "method": method},
            )
        _refuse_undecodable(request)
        return principal

    def _principal(self, metadata: dict[str, Any], peer: str) -> Principal:
        principal = self._identified(metadata, peer)
        note_partner(principal.partner_id or principal.principal_id)  # metrics and logs
        if self._rate_limiter is not None:
            self._rate_limiter.take(principal.partner_id or principal.principal_id)
        return principal

    def _identified(self, metadata: dict[str, Any], peer: str) -> Principal:
        authorization = str(metadata.get("authorization", ""))
        scheme, _, api_key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not api_key.strip():
            raise Unauthenticated(
                "API_KEY_MISSING", "send `authorization: Bearer <api key>` metadata"
            )
        principal = self._cached_principal(api_key.strip(), _peer_host(peer))
        if principal is None:
            raise Unauthenticated("API_KEY_INVALID", "the API key is unknown or revoked")
        return principal

    def _cached_principal(self, api_key: str, peer_host: str) -> Principal | None:
        cache_key = hashlib.sha256(api_key.encode()).hexdigest()
        now = time.monotonic()
        with self._principals_lock:
            cached = self._principals.get(cache_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        # A peer sending unknown keys is refused before it costs a lookup each (forged keys
        # are all distinct, so the cache alone never stops them); known keys spend nothing.
        self._failed_authentications.require_token(peer_host)
        principal = self._authenticate(api_key)
        if principal is None:
            self._failed_authentications.spend(peer_host)
        with self._principals_lock:
            if len(self._principals) >= PRINCIPAL_CACHE_ENTRIES_MAX:
                self._principals.clear()
            self._principals[cache_key] = (principal, now + PRINCIPAL_CACHE_SECONDS)
        return principal


def recheck_key() -> None:
    """Raise UNAUTHENTICATED when the key of the running stream has been revoked: a stream
    re-checks it as often as it likes, and sees a revocation within PRINCIPAL_CACHE_SECONDS,
    as a new unary call would."""
    _current_key_check.get()()


def _peer_host(peer: str) -> str:
    """The client's address without its port ("ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7"): one
    client opens many connections, each from another port."""
    address, separator, port = peer.rpartition(":")
    return address if separator and port.isdigit() and address.count(":") else peer


def _status_of_failure(error: Exception, method: str) -> grpc.Status:
    """Client mistakes keep their code; an unreachable database is UNAVAILABLE; anything else
    is the hub's own fault, logged, and INTERNAL (and, being one transaction, applied nothing)."""
    if isinstance(error, CoalitionError):
        return status_of(error)
    if isinstance(error, DBAPIError):
        return _database_status(error, method)
    logger.exception("unexpected failure in %s", method, exc_info=error)
    return internal_status("INTERNAL_ERROR", "the hub failed; nothing was applied")


def _deadline_of(context: grpc.ServicerContext) -> AbstractContextManager[None]:
    seconds_remaining = context.time_remaining()
    if seconds_remaining is None or seconds_remaining > DEADLINE_SECONDS_MAX:
        return deadlines.call_deadline(None)
    return deadlines.call_deadline(seconds_remaining)


def _database_status(error: DBAPIError, method: str) -> grpc.Status:
    if getattr(error.orig, "sqlstate", None) in deadlines.TIMEOUT_SQLSTATES:
        # The call's deadline passed while it waited (store/deadlines.py): the client has
        # stopped listening, and the rollback applied nothing. DEADLINE_EXCEEDED, as the
        # client's own timer says, whichever of the two answers first.
        logger.info("deadline reached in %s while waiting on the database", method)
        return status_of(
            DeadlineExceeded(
                "DEADLINE_REACHED",
                "the call's deadline passed while it waited on the database; nothing was applied",
            )
        )
    if error.connection_invalidated or isinstance(error, OperationalError):
        logger.warning("database unavailable during %s: %s", method, error.orig)
        return status_of(
            Unavailable("DATABASE_UNAVAILABLE", "the ledger database is unreachable; retry")
        )
    logger.exception("database failure in %s", method)
    return internal_status("INTERNAL_ERROR", "the hub failed; nothing was applied")


class _Undecodable:
    """What the tolerant deserializer returns for bytes that are not the request message."""


UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """grpcio answers INTERNAL when a request fails to deserialize; garbage from a client is
    its mistake, so the guard answers INVALID_ARGUMENT for it instead."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, or whatever a malformed message raises
            return UNDECODABLE

    return deserialize


def _refuse_undecodable(request: Any) -> None:
    if request is UNDECODABLE:
        raise InvalidArgument(
            [FieldViolation("request", "the bytes are not a valid request message")],
            reason="REQUEST_UNDECODABLE",
        )


def _checked_stream(request: Any) -> Any:
    """A client stream's messages, refusing an undecodable one when it is reached."""
    if not isinstance(request, Iterator):
        return request

    def checked() -> Iterator[Any]:
        for message in request:
            _refuse_undecodable(message)
            yield message

    return checked()


def _wrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
    wrap_stream: Callable[[Callable[..., Iterator[Any]]], Callable[..., Iterator[Any]]],
) -> grpc.RpcMethodHandler:
    serializers = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap_stream(handler.unary_stream), **serializers
        )
    # Bidirectional streams: none exist yet; their guard would wrap both iterators.
    raise AssertionError(f"no guard for bidirectional handler {handler}")
