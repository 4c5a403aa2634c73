"""PromotionService: promotions as data, changed by their owners while every hub runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

import grpc

from coalition.api import responses
from coalition.api.interceptors import current_principal
from coalition.api.requests import RequestParser, page_token_for
from coalition.domain.errors import FieldViolation, InvalidArgument
from coalition.domain.promotions import Promotion
from coalition.operations import promotion_admin
from coalition.operations.promotion_admin import Actor
from coalition.programme.config import ID_LENGTH_MAX, PROMOTIONS_MAX, TIERS_MAX, Programme
from coalition.programme.promotion_catalogue import StoredPromotion
from coalition.reports.build import PromotionPerformance
from coalition.reports.period import Period, parse_period
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, promotion_service_pb2_grpc
from coalition.v1 import promotion_service_pb2 as messages

FUNDING: dict[int, str] = {
    common_pb2.PROMOTION_FUNDING_PARTNER: "partner",
    common_pb2.PROMOTION_FUNDING_COALITION: "coalition",
}
STATES = {"active": messages.PROMOTION_STATE_ACTIVE, "paused": messages.PROMOTION_STATE_PAUSED}
FIRST_PURCHASES: dict[int, str] = {
    messages.FIRST_PURCHASE_AT_PARTNER: "partner",
    messages.FIRST_PURCHASE_IN_COALITION: "coalition",
}
FIRST_PURCHASE_NAMES = {
    "partner": "FIRST_PURCHASE_AT_PARTNER",
    "coalition": "FIRST_PURCHASE_IN_COALITION",
}
CAP_PERIODS: dict[int, str] = {
    messages.CAP_PERIOD_PROMOTION: "promotion",
    messages.CAP_PERIOD_YEAR: "year",
    messages.CAP_PERIOD_MONTH: "month",
    messages.CAP_PERIOD_WEEK: "week",
    messages.CAP_PERIOD_DAY: "day",
}
# A page of ListPromotions holds at most this much serialized, whatever page_size asks
# (AIP-158 lets a page hold fewer): 500 promotions each naming 500 partners would be about
# 16 MiB, past the 4 MiB message limit (api/bounds.py asserts this bound fits a message).
PAGE_BYTES_MAX = 1024 * 1024
# What a promotion in a repeated field costs beyond its own bytes: the tag and the length.
REPEATED_ITEM_OVERHEAD_BYTES_MAX = 4
# The largest promotion the API accepts, serialized: partner_ids up to PROMOTIONS_MAX ids of
# up to ID_LENGTH_MAX characters of any script (4 bytes each in UTF-8), tier_ids up to the
# ladder's TIERS_MAX ASCII ids, its own id and owner, each with its tag and length, and a
# generous allowance for the time zone, numbers, enums and timestamps.
UTF8_BYTES_PER_CHARACTER_MAX = 4
PROMOTION_OTHER_FIELDS_BYTES_MAX = 512
PROMOTION_BYTES_MAX = (
    PROMOTIONS_MAX * (UTF8_BYTES_PER_CHARACTER_MAX * ID_LENGTH_MAX + 3)
    + (TIERS_MAX + 2) * (ID_LENGTH_MAX + 2)
    + PROMOTION_OTHER_FIELDS_BYTES_MAX
)

# A rule's key (docs/promotions.md, promotions.toml) where the proto names it otherwise.
FIELD_OF_KEY = {
    "referral_referred_points": "referral.referred_points",
    "referral_referrer_points": "referral.referrer_points",
    "spend_amount_minor_min": "spend_min.amount_minor",
    "spend_currency": "spend_min.currency",
    "budget_amount_minor": "budget_money.amount_minor",
    "budget_currency": "budget_money.currency",
}


def _actor() -> Actor:
    principal = current_principal()
    partner_id = principal.partner_id if principal.role == "partner" else None
    return Actor(principal.principal_id, partner_id)


def _entry(parser: RequestParser, message: messages.Promotion) -> dict[str, Any]:
    """The proto's promotion as the keys of a definition (programme/config.py checks them)."""
    entry: dict[str, Any] = {"promotion_id": message.promotion_id}
    for key in ("starts_at", "ends_at"):
        instant = parser.timestamp(message, key)
        if instant is None:
            parser.fault(f"promotion.{key}", "required")
        entry[key] = instant
    if message.funded_by in FUNDING:
        entry["funded_by"] = FUNDING[message.funded_by]
    elif message.funded_by != common_pb2.PROMOTION_FUNDING_UNSPECIFIED:
        parser.fault("promotion.funded_by", "not a PromotionFunding value")
    optional: dict[str, Any] = {
        "time_zone": message.time_zone or None,
        "partner_ids": list(message.partner_ids) or None,
        "tier_ids": list(message.tier_ids) or None,
        "member_day": message.member_day or None,
        "weekdays": list(message.weekdays) or None,
        "birthday_month": message.birthday_month or None,
        "birthday_day": message.birthday_day or None,
        "grants_per_member_max": message.grants_per_member_max or None,
        "budget_points": message.budget_points or None,
        "first_purchase": _choice(
            parser, message.first_purchase, FIRST_PURCHASES, "first_purchase"
        ),
        "cap_period": _choice(parser, message.cap_period, CAP_PERIODS, "cap_period"),
    }
    reward = message.WhichOneof("reward")
    if reward == "referral":
        optional["referral_referred_points"] = message.referral.referred_points
        optional["referral_referrer_points"] = message.referral.referrer_points
    elif reward is not None:
        optional[reward] = getattr(message, reward)
    if message.HasField("spend_min"):
        optional["spend_amount_minor_min"] = message.spend_min.amount_minor
        optional["spend_currency"] = message.spend_min.currency
    if message.HasField("budget_money"):
        optional["budget_amount_minor"] = message.budget_money.amount_minor
        optional["budget_currency"] = message.budget_money.currency
    entry.update({key: value for key, value in optional.items() if value is not None})
    return entry


def _within_bytes(
    page: list[StoredPromotion], bytes_max: int
) -> tuple[list[messages.Promotion], bool]:
    """The first promotions of `page` that fit in `bytes_max` serialized, and whether any was
    left out; never none (one promotion fits a page: api/bounds.py)."""
    promotions: list[messages.Promotion] = []
    page_bytes = 0
    for stored in page:
        message = _message(stored)
        page_bytes += message.ByteSize() + REPEATED_ITEM_OVERHEAD_BYTES_MAX
        if page_bytes > bytes_max:
            assert promotions, "a promotion is smaller than a page"
            return promotions, True
        promotions.append(message)
    return promotions, False


def _choice(parser: RequestParser, value: int, choices: dict[int, str], name: str) -> str | None:
    if value == 0:
        return None
    if value not in choices:
        parser.fault(f"promotion.{name}", "not a value of its enum")
    return choices.get(value)


def _message(stored: StoredPromotion) -> messages.Promotion:
    promotion: Promotion = stored.promotion
    message = messages.Promotion(
        promotion_id=promotion.promotion_id,
        owner_partner_id=promotion.owner_partner_id or "",
        version=promotion.version,
        state=STATES[promotion.state],
        funded_by=common_pb2.PromotionFunding.Value(
            f"PROMOTION_FUNDING_{promotion.funded_by.upper()}"
        ),
        starts_at=responses.timestamp(promotion.starts_at),
        ends_at=responses.timestamp(promotion.ends_at),
        time_zone=promotion.time_zone,
        partner_ids=sorted(promotion.partner_ids or ()),
        tier_ids=sorted(promotion.tier_ids or ()),
        member_day=promotion.member_day or 0,
        weekdays=sorted(promotion.weekdays or ()),
        birthday_month=promotion.birthday_month,
        birthday_day=promotion.birthday_day,
        first_purchase=messages.FirstPurchase.Value(
            FIRST_PURCHASE_NAMES.get(promotion.first_purchase or "", "FIRST_PURCHASE_UNSPECIFIED")
        ),
        grants_per_member_max=promotion.grants_per_member_max or 0,
        cap_period=messages.CapPeriod.Value(f"CAP_PERIOD_{promotion.cap_period.upper()}"),
        budget_points=promotion.budget_points or 0,
        spent_points=stored.spent_points,
        create_time=responses.timestamp(stored.create_time),
        update_time=responses.timestamp(stored.update_time),
    )
    if promotion.multiplier is not None:
        message.multiplier = str(promotion.multiplier)
    elif promotion.bonus_points is not None:
        message.bonus_points = promotion.bonus_points
    else:
        message.referral.referred_points = promotion.referral_referred_points or 0
        message.referral.referrer_points = promotion.referral_referrer_points or 0
    if promotion.spend_amount_minor_min is not None:
        message.spend_min.amount_minor = promotion.spend_amount_minor_min
        message.spend_min.currency = promotion.spend_currency or ""
    if promotion.budget_amount_minor is not None:
        message.budget_money.amount_minor = promotion.budget_amount_minor
        message.budget_money.currency = promotion.budget_currency or ""
        message.spent_amount_minor = stored.spent_amount_minor
    return message


@contextmanager
def _proto_field_names() -> Iterator[None]:
    """Faults of a definition, named by the proto's fields."""
    try:
        yield
    except InvalidArgument as error:
        if error.reason != "INVALID_FIELD":
            raise
        violations = []
        for violation in error.field_violations:
            key = violation.field.removeprefix("promotion.")
            field = f"promotion.{FIELD_OF_KEY.get(key, key)}"
            violations.append(FieldViolation(field, violation.description))
        raise InvalidArgument(violations) from error


def _now() -> datetime:
    return datetime.now(UTC)


class PromotionServicer(promotion_service_pb2_grpc.PromotionServiceServicer):
    def __init__(self, unit_of_work: Callable[..., UnitOfWork], programme: Programme) -> None:
        self._unit_of_work = unit_of_work
        self._programme = programme  # the hub's: a tier filter names tiers of its ladder

    def CreatePromotion(
        self, request: messages.CreatePromotionRequest, context: grpc.ServicerContext
    ) -> messages.CreatePromotionResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        entry = _entry(parser, request.promotion)
        parser.done()
        with _proto_field_names():
            stored = promotion_admin.create_promotion(
                self._unit_of_work(), _actor(), entry, request_id, self._programme, _now()
            )
        return messages.CreatePromotionResponse(promotion=_message(stored))

    def UpdatePromotion(
        self, request: messages.UpdatePromotionRequest, context: grpc.ServicerContext
    ) -> messages.UpdatePromotionResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        entry = _entry(parser, request.promotion)
        if request.expected_version < 0:
            parser.fault("expected_version", "must not be negative")
        parser.done()
        with _proto_field_names():
            stored = promotion_admin.update_promotion(
                self._unit_of_work(),
                _actor(),
                entry,
                request.expected_version,
                request_id,
                self._programme,
                _now(),
            )
        return messages.UpdatePromotionResponse(promotion=_message(stored))

    def PausePromotion(
        self, request: messages.PausePromotionRequest, context: grpc.ServicerContext
    ) -> messages.PausePromotionResponse:
        stored = self._set_state(request, "paused")
        return messages.PausePromotionResponse(promotion=_message(stored))

    def ResumePromotion(
        self, request: messages.ResumePromotionRequest, context: grpc.ServicerContext
    ) -> messages.ResumePromotionResponse:
        stored = self._set_state(request, "active")
        return messages.ResumePromotionResponse(promotion=_message(stored))

    def _set_state(self, request: Any, state: str) -> StoredPromotion:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        promotion_id = parser.identifier(request.promotion_id, "promotion_id")
        parser.done()
        return promotion_admin.set_promotion_state(
            self._unit_of_work(), _actor(), promotion_id, state, request_id, _now()
        )

    def GetPromotion(
        self, request: messages.GetPromotionRequest, context: grpc.ServicerContext
    ) -> messages.GetPromotionResponse:
        parser = RequestParser()
        promotion_id = parser.identifier(request.promotion_id, "promotion_id")
        parser.done()
        stored = promotion_admin.get_promotion(
            self._unit_of_work(read_only=True), _actor(), promotion_id
        )
        return messages.GetPromotionResponse(promotion=_message(stored))

    def ListPromotions(
        self, request: messages.ListPromotionsRequest, context: grpc.ServicerContext
    ) -> messages.ListPromotionsResponse:
        parser = RequestParser()
        page_size = parser.page_size(request.page_size)
        query = {"caller": current_principal().principal_id, "page_size": page_size}
        after_promotion_id = parser.page_token(request.page_token, query, str) or ""
        parser.done()
        page, last_id = promotion_admin.list_promotions(
            self._unit_of_work(read_only=True), _actor(), page_size, after_promotion_id
        )
        promotions, cut = _within_bytes(page, PAGE_BYTES_MAX)
        if cut:  # the next page starts after the last promotion this one holds
            last_id = promotions[-1].promotion_id
        return messages.ListPromotionsResponse(
            promotions=promotions,
            next_page_token=page_token_for(last_id, query) if last_id else "",
        )

    def GetPromotionPerformance(
        self, request: messages.GetPromotionPerformanceRequest, context: grpc.ServicerContext
    ) -> messages.GetPromotionPerformanceResponse:
        parser = RequestParser()
        promotion_id = parser.identifier(request.promotion_id, "promotion_id")
        period: Period | None = None
        try:
            period = parse_period(request.period)
        except ValueError:
            parser.fault("period", 'a month "YYYY-MM" or a day "YYYY-MM-DD"')
        parser.done()
        assert period is not None
        stored, rows = promotion_admin.promotion_performance(
            self._unit_of_work(read_only=True), _actor(), promotion_id, period
        )
        return messages.GetPromotionPerformanceResponse(
            promotion=_message(stored), performance=[_performance(row) for row in rows]
        )


def _performance(row: PromotionPerformance) -> messages.PromotionPerformance:
    message = messages.PromotionPerformance(
        partner_id=row.partner_id,
        members_reached=row.members_reached,
        promoted_visits=row.promoted_visits,
        points_granted=row.points_granted,
        cost=_money(row.cost_minor, row.currency),
        participant_spend=_money(Fraction(row.participant_spend_minor), row.currency),
        roi=row.roi,
    )
    incremental = row.incremental_spend_minor
    if incremental is not None:
        message.incremental_spend.CopyFrom(_money(incremental, row.currency))
    if row.budget_spent_amount_minor is not None and row.budget_left_amount_minor is not None:
        message.budget_money_spent.CopyFrom(
            _money(Fraction(row.budget_spent_amount_minor), row.budget_currency)
        )
        message.budget_money_left.CopyFrom(
            _money(Fraction(row.budget_left_amount_minor), row.budget_currency)
        )
    return message


def _money(amount_minor: Fraction, currency: str) -> common_pb2.Money:
    exact = Decimal(amount_minor.numerator) / Decimal(amount_minor.denominator)
    rounded = int(exact.to_integral_value(ROUND_HALF_EVEN))
    return common_pb2.Money(amount_minor=rounded, currency=currency)
