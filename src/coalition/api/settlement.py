"""SettlementService: run, read, stream and acknowledge statements; publish signing keys.

Roles are enforced by the interceptor (server.ROLES_BY_METHOD); here a partner is further
limited to its own statements, and another partner's look absent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime

import grpc

from coalition.api import responses
from coalition.api.interceptors import current_principal
from coalition.api.requests import RequestParser, page_token_for
from coalition.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from coalition.settlement import keys, service, signing
from coalition.settlement.format import EVEN, HUB_PAYS_PARTNER, PARTNER_PAYS_HUB
from coalition.settlement.service import Acknowledgement, Signer, Statement
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import settlement_service_pb2 as messages
from coalition.v1 import settlement_service_pb2_grpc

_PERIOD_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NET_DIRECTIONS = {
    PARTNER_PAYS_HUB: messages.NET_DIRECTION_PARTNER_PAYS_HUB,
    HUB_PAYS_PARTNER: messages.NET_DIRECTION_HUB_PAYS_PARTNER,
    EVEN: messages.NET_DIRECTION_EVEN,
}


def parse_period(parser: RequestParser, value: str, field: str = "period") -> date:
    """A calendar date written YYYY-MM-DD, nothing else (no week dates, no times)."""
    if _PERIOD_PATTERN.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    parser.fault(field, "required: the period's last day as YYYY-MM-DD")
    return date.min


def statement_message(
    statement: Statement, acknowledgement: Acknowledgement | None
) -> messages.SettlementStatement:
    body = statement.body_document()
    money = body["money"]
    return messages.SettlementStatement(
        statement_id=statement.statement_id,
        partner_id=statement.partner_id,
        sequence_number=statement.sequence_number,
        period=statement.period_last_day.isoformat(),
        generate_time=responses.timestamp(statement.generate_time),
        entry_count=str(statement.entry_count),
        currency=body["currency"],
        owed_by_partner_minor=money["owed_by_partner_minor"],
        owed_by_hub_minor=money["owed_by_hub_minor"],
        net_minor=money["net_minor"],
        net_direction=_NET_DIRECTIONS[money["net_direction"]],
        merkle_root=statement.merkle_root,
        previous_statement_hash=statement.previous_statement_hash,
        statement_hash=statement.statement_hash,
        signing_key_id=statement.signing_key_id,
        signature=statement.signature,
        body=statement.body,
        acknowledge_time=None
        if acknowledgement is None
        else responses.timestamp(acknowledgement.create_time),
        acknowledgement=None
        if acknowledgement is None
        else messages.SettlementAcknowledgement(
            partner_public_key=acknowledgement.partner_public_key,
            signature=acknowledgement.signature,
            acknowledge_time=responses.timestamp(acknowledgement.create_time),
        ),
    )


def _own_partner_id() -> str | None:
    """None for finance (sees every partner); the caller's partner otherwise."""
    principal = current_principal()
    if principal.role == "finance":
        return None
    assert principal.partner_id is not None, "partner keys always belong to a partner"
    return principal.partner_id


class SettlementServicer(settlement_service_pb2_grpc.SettlementServiceServicer):
    def __init__(self, unit_of_work: Callable[..., UnitOfWork], signer: Signer | None) -> None:
        self._unit_of_work = unit_of_work
        self._signer = signer

    def RunSettlement(
        self, request: messages.RunSettlementRequest, context: grpc.ServicerContext
    ) -> messages.RunSettlementResponse:
        parser = RequestParser()
        period = parse_period(parser, request.period)
        partner_id = parser.identifier(request.partner_id, "partner_id", required=False) or None
        parser.done()
        if self._signer is None:
            raise FailedPrecondition(
                "SIGNING_KEY_NOT_CONFIGURED",
                "this hub was started without a settlement signing key (--signing-key)",
            )
        outcomes = service.run_settlement(
            self._unit_of_work, period, partner_id, self._signer, datetime.now(UTC)
        )
        results = [outcome for outcome in outcomes if isinstance(outcome, service.RunResult)]
        failures = [
            messages.SettlementFailure(
                partner_id=outcome.partner_id,
                reason=outcome.error.reason,
                message=outcome.error.message,
            )
            for outcome in outcomes
            if isinstance(outcome, service.PartnerFailure)
        ]
        return messages.RunSettlementResponse(
            statements=[statement_message(result.statement, None) for result in results],
            created=[result.created for result in results],
            failures=failures,
        )

    def GetSettlement(
        self, request: messages.GetSettlementRequest, context: grpc.ServicerContext
    ) -> messages.GetSettlementResponse:
        parser = RequestParser()
        statement_id = parser.identifier(request.statement_id, "statement_id")
        parser.done()
        with self._unit_of_work(read_only=True) as uow:
            statement = service.get_statement(uow, statement_id, _own_partner_id())
            acknowledged = service.acknowledgements(uow, [statement_id])
        return messages.GetSettlementResponse(
            statement=statement_message(statement, acknowledged.get(statement_id))
        )

    def ListSettlements(
        self, request: messages.ListSettlementsRequest, context: grpc.ServicerContext
    ) -> messages.ListSettlementsResponse:
        parser = RequestParser()
        partner_id = parser.identifier(request.partner_id, "partner_id", required=False) or None
        page_size = parser.page_size(request.page_size)
        query = {
            "caller": current_principal().principal_id,
            "page_size": page_size,
            "partner_id": partner_id,
        }
        after_statement_id = parser.page_token(request.page_token, query)
        parser.done()
        own_partner_id = _own_partner_id()
        if own_partner_id is not None:
            if partner_id not in (None, own_partner_id):
                raise NotFound(
                    "PARTNER_NOT_FOUND",
                    f"partner {partner_id!r} does not exist",
                    {"partner_id": partner_id},
                )
            partner_id = own_partner_id
        with self._unit_of_work(read_only=True) as uow:
            found = service.list_statements(uow, partner_id, after_statement_id, page_size + 1)
            page = found[:page_size]
            acknowledged = service.acknowledgements(uow, [s.statement_id for s in page])
        next_page_token = (
            page_token_for(page[-1].statement_id, query) if len(found) > page_size else ""
        )
        return messages.ListSettlementsResponse(
            statements=[statement_message(s, acknowledged.get(s.statement_id)) for s in page],
            next_page_token=next_page_token,
        )

    def ListSettlementEntries(
        self, request: messages.ListSettlementEntriesRequest, context: grpc.ServicerContext
    ) -> Iterator[messages.ListSettlementEntriesResponse]:
        parser = RequestParser()
        statement_id = parser.identifier(request.statement_id, "statement_id")
        parser.done()
        entries = service.stream_entries(
            lambda: self._unit_of_work(read_only=True), statement_id, _own_partner_id()
        )
        for leaf_index, entry in enumerate(entries):
            yield messages.ListSettlementEntriesResponse(
                leaf_index=leaf_index,
                transaction_id=str(entry.transaction_id),
                canonical_entry=entry.canonical_bytes(),
            )

    def GetSigningKeys(
        self, request: messages.GetSigningKeysRequest, context: grpc.ServicerContext
    ) -> messages.GetSigningKeysResponse:
        with self._unit_of_work(read_only=True) as uow:
            published = keys.list_keys(uow)
        return messages.GetSigningKeysResponse(
            signing_keys=[
                messages.SigningKey(
                    key_id=key.key_id,
                    algorithm=key.algorithm,
                    public_key=key.public_key,
                    valid_from=responses.timestamp(key.valid_from),
                    valid_until=None
                    if key.valid_until is None
                    else responses.timestamp(key.valid_until),
                )
                for key in published
            ]
        )

    def AcknowledgeSettlement(
        self, request: messages.AcknowledgeSettlementRequest, context: grpc.ServicerContext
    ) -> messages.AcknowledgeSettlementResponse:
        parser = RequestParser()
        statement_id = parser.identifier(request.statement_id, "statement_id")
        parser.done()
        if len(request.signature) != signing.SIGNATURE_BYTES:
            # A signature of the wrong length is as invalid as a wrong one of the right
            # length: one reason for both (docs/settlement.md).
            raise InvalidArgument(
                [FieldViolation("signature", f"required: {signing.SIGNATURE_BYTES} bytes")],
                reason="ACKNOWLEDGEMENT_SIGNATURE_INVALID",
            )
        partner_id = _own_partner_id()
        assert partner_id is not None, "only partners acknowledge (server.ROLES_BY_METHOD)"
        acknowledgement = service.acknowledge(
            self._unit_of_work(), statement_id, partner_id, request.signature, datetime.now(UTC)
        )
        with self._unit_of_work(read_only=True) as uow:
            statement = service.get_statement(uow, statement_id, partner_id)
        return messages.AcknowledgeSettlementResponse(
            statement=statement_message(statement, acknowledgement)
        )
