"""PartnerService: partners, rate versions and API keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from coalition.api import responses
from coalition.api.interceptors import caller_partner_id, current_principal
from coalition.api.requests import RequestParser, page_token_for
from coalition.domain.errors import NotFound
from coalition.domain.points import Money, RateVersion
from coalition.partners import catalog, credentials, daily_sales
from coalition.reports.build import contribution_shares
from coalition.reports.period import Period, parse_period
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, partner_service_pb2_grpc
from coalition.v1 import partner_service_pb2 as messages

PRINCIPAL_ID_LENGTH_MAX = 63  # api_keys.principal_id

ROLES = {
    messages.ROLE_PARTNER: "partner",
    messages.ROLE_MERCHANT: "merchant",
    messages.ROLE_FINANCE: "finance",
    messages.ROLE_ADMIN: "admin",
    messages.ROLE_OPERATIONS: "operations",
}


def _partner_message(partner: catalog.Partner) -> messages.Partner:
    return messages.Partner(
        partner_id=partner.partner_id,
        name=partner.name,
        kind=partner.kind,
        currency=partner.currency,
        points_validity_months=partner.points_validity_months or 0,
    )


def _rate_version_message(version: RateVersion) -> messages.RateVersion:
    native_points_rate = version.native_points_rate
    return messages.RateVersion(
        rate_version_id=version.rate_version_id,
        partner_id=version.partner_id,
        effective_from=responses.timestamp(version.effective_from),
        earn_points_per_unit=str(version.earn_points_per_unit),
        native_points_rate="" if native_points_rate is None else str(native_points_rate),
        burn_value_minor_per_point=str(version.burn_value_minor_per_point),
        issuance_price_minor_per_point=str(version.issuance_price_minor_per_point),
        redemption_price_minor_per_point=str(version.redemption_price_minor_per_point),
    )


def _check_may_read(partner_id: str) -> None:
    """Admins read every partner; a partner reads only itself (others look absent)."""
    principal = current_principal()
    if principal.role != "admin" and principal.partner_id != partner_id:
        raise NotFound(
            "PARTNER_NOT_FOUND",
            f"partner {partner_id!r} does not exist",
            {"partner_id": partner_id},
        )


class PartnerServicer(partner_service_pb2_grpc.PartnerServiceServicer):
    def __init__(self, unit_of_work: Callable[..., UnitOfWork]) -> None:
        self._unit_of_work = unit_of_work

    def GetPartner(
        self, request: messages.GetPartnerRequest, context: grpc.ServicerContext
    ) -> messages.GetPartnerResponse:
        parser = RequestParser()
        partner_id = parser.identifier(request.partner_id, "partner_id")
        parser.done()
        _check_may_read(partner_id)
        with self._unit_of_work(read_only=True) as uow:
            partner = catalog.get_partner(uow, partner_id)
        return messages.GetPartnerResponse(partner=_partner_message(partner))

    def ListPartners(
        self, request: messages.ListPartnersRequest, context: grpc.ServicerContext
    ) -> messages.ListPartnersResponse:
        parser = RequestParser()
        page_size = parser.page_size(request.page_size)
        query = {"caller": current_principal().principal_id, "page_size": page_size}
        after_partner_id = parser.page_token(request.page_token, query, str) or ""
        parser.done()
        with self._unit_of_work(read_only=True) as uow:
            found = catalog.list_partners(uow, after_partner_id, page_size + 1)
        page = found[:page_size]
        next_page_token = (
            page_token_for(page[-1].partner_id, query) if len(found) > page_size else ""
        )
        return messages.ListPartnersResponse(
            partners=[_partner_message(partner) for partner in page],
            next_page_token=next_page_token,
        )

    def ListRateVersions(
        self, request: messages.ListRateVersionsRequest, context: grpc.ServicerContext
    ) -> messages.ListRateVersionsResponse:
        parser = RequestParser()
        partner_id = parser.identifier(request.partner_id, "partner_id")
        parser.done()
        _check_may_read(partner_id)
        with self._unit_of_work(read_only=True) as uow:
            catalog.get_partner(uow, partner_id)
            versions = catalog.list_rate_versions(uow, partner_id)
        return messages.ListRateVersionsResponse(
            rate_versions=[_rate_version_message(version) for version in versions]
        )

    def CreateApiKey(
        self, request: messages.CreateApiKeyRequest, context: grpc.ServicerContext
    ) -> messages.CreateApiKeyResponse:
        parser = RequestParser()
        principal_id = parser.identifier(
            request.principal_id, "principal_id", length_max=PRINCIPAL_ID_LENGTH_MAX
        )
        role = parser.choice(request.role, ROLES, "role")
        parser.done()
        assert role is not None
        issued = credentials.issue_key(self._unit_of_work(), principal_id, role, datetime.now(UTC))
        return messages.CreateApiKeyResponse(key_id=issued.key_id, api_key=issued.api_key)

    def RevokeApiKey(
        self, request: messages.RevokeApiKeyRequest, context: grpc.ServicerContext
    ) -> messages.RevokeApiKeyResponse:
        parser = RequestParser()
        key_id = parser.identifier(request.key_id, "key_id")
        parser.done()
        revoke_time = credentials.revoke_key(self._unit_of_work(), key_id, datetime.now(UTC))
        return messages.RevokeApiKeyResponse(revoke_time=responses.timestamp(revoke_time))

    def ReportDailySales(
        self, request: messages.ReportDailySalesRequest, context: grpc.ServicerContext
    ) -> messages.ReportDailySalesResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        sales_date = daily_sales.parse_sales_date(request.sales_date)
        if sales_date is None:
            parser.fault("sales_date", 'a calendar day "YYYY-MM-DD"')
        if not request.HasField("total_sales"):
            parser.fault("total_sales", "required")
        total = Money(request.total_sales.amount_minor, request.total_sales.currency)
        parser.done()
        assert sales_date is not None
        sales = daily_sales.report_daily_sales(
            self._unit_of_work(),
            caller_partner_id(),
            current_principal().principal_id,
            request_id,
            sales_date,
            total,
            datetime.now(UTC),
        )
        return messages.ReportDailySalesResponse(
            daily_sales=messages.DailySales(
                partner_id=sales.partner_id,
                sales_date=sales.sales_date.isoformat(),
                total_sales=common_pb2.Money(
                    amount_minor=sales.total.amount_minor, currency=sales.total.currency
                ),
                version=sales.version,
                report_time=responses.timestamp(sales.report_time),
            )
        )

    def GetContributionShare(
        self, request: messages.GetContributionShareRequest, context: grpc.ServicerContext
    ) -> messages.GetContributionShareResponse:
        parser = RequestParser()
        partner_id = parser.identifier(request.partner_id, "partner_id")
        period: Period | None = None
        try:
            period = parse_period(request.period)
        except (ValueError, OverflowError):
            parser.fault("period", 'a month "YYYY-MM" or a day "YYYY-MM-DD"')
        parser.done()
        assert period is not None
        _check_may_read(partner_id)
        with self._unit_of_work(read_only=True) as uow:
            catalog.get_partner(uow, partner_id)
            shares = contribution_shares(uow, period, partner_id)
        response = messages.GetContributionShareResponse(partner_id=partner_id)
        for share in shares:
            response.sales_dates.extend(day.isoformat() for day in share.days)
            response.member_spend.CopyFrom(
                common_pb2.Money(amount_minor=share.member_spend_minor, currency=share.currency)
            )
            response.reported_sales.CopyFrom(
                common_pb2.Money(amount_minor=share.reported_sales_minor, currency=share.currency)
            )
            response.share_of_sales = share.share
        return response
