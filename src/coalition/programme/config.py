"""Loading the programme (tier ladder and promotions) from `tiers.toml` and `promotions.toml`.

The programme is configuration, not data: every process builds one `Programme` value from its
settings when it starts (`configured_programme`: `coalition serve --programme DIR`, or
COALITION_PROGRAMME_DIR: settings.py, handed to every worker) and passes it down; there is no
process-wide programme. The hub holds it (api/server.py: its committer, its servicers, its
scheduler) and hands it to every use case that reads it (earn, batch earn, the committer's
grouping, referral rewards, tiers, the promotions API, the profile's tier), so promotions and
tiers cost the hot path no query and no rebuilding. Without a directory the programme is one
base tier with multiplier 1 and no promotions. The referral defaults (used only without any
referral campaign) come from the settings too. Promotions managed over the API are data, not
this value: the catalogue reloads them (programme/promotion_catalogue.py).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

from coalition.domain.currency import is_known_currency
from coalition.domain.points import AMOUNT_MINOR_MAX
from coalition.domain.promotions import (
    CAP_PERIODS,
    FIRST_PURCHASE_SCOPES,
    FUNDED_BY_COALITION,
    FUNDED_BY_PARTNER,
    Promotion,
)
from coalition.domain.tiers import Tier, TierLadder

TIERS_FILE = "tiers.toml"
PROMOTIONS_FILE = "promotions.toml"
# Bounds on configuration, so that a runaway file cannot slow every earn down.
TIERS_MAX = 16
PROMOTIONS_MAX = 500
ID_LENGTH_MAX = 64

DEFAULT_LADDER = TierLadder((Tier("member", "Member", 0, Decimal(1)),))
REFERRAL_BONUS_POINTS_DEFAULT = 500
REFERRAL_BONUS_POINTS_MAX = 1_000_000
REFERRAL_QUALIFYING_POINTS_DEFAULT = 1  # any earn that credits points qualifies


class ProgrammeConfigError(RuntimeError):
    """A programme file is invalid; the message names the file and the entry."""


@dataclass(frozen=True)
class ReferralDefaults:
    """The referral reward without any referral campaign (COALITION_REFERRAL_BONUS_POINTS,
    each side; 0 pays none), and the points an earn needs to qualify a referral."""

    bonus_points: int = REFERRAL_BONUS_POINTS_DEFAULT
    qualifying_points_min: int = REFERRAL_QUALIFYING_POINTS_DEFAULT

    def __post_init__(self) -> None:
        assert 0 <= self.bonus_points <= REFERRAL_BONUS_POINTS_MAX, "referral bonus in bounds"
        assert self.qualifying_points_min >= REFERRAL_QUALIFYING_POINTS_DEFAULT


REFERRAL_DEFAULTS = ReferralDefaults()


@dataclass(frozen=True)
class Programme:
    """A process's programme, built once at start and passed down (frozen: the threads that
    hold it share it without a lock)."""

    ladder: TierLadder
    promotions: tuple[Promotion, ...]
    referral: ReferralDefaults = REFERRAL_DEFAULTS


DEFAULT_PROGRAMME = Programme(DEFAULT_LADDER, ())


def configured_programme(directory: Path | None, referral: ReferralDefaults) -> Programme:
    """The programme of the settings: the directory's files, else the default, and the
    referral defaults."""
    programme = DEFAULT_PROGRAMME if directory is None else load_programme(directory)
    return Programme(programme.ladder, programme.promotions, referral)


def load_programme(directory: Path) -> Programme:
    """Read `tiers.toml` (required) and `promotions.toml` (optional) from `directory`."""
    tiers_path = directory / TIERS_FILE
    if not tiers_path.is_file():
        raise ProgrammeConfigError(f"{tiers_path}: missing; the programme needs a tier ladder")
    ladder = _ladder(tiers_path, _read(tiers_path).get("tier", []))
    promotions_path = directory / PROMOTIONS_FILE
    entries = _read(promotions_path).get("promotion", []) if promotions_path.is_file() else []
    promotions = _promotions(promotions_path, entries, {tier.tier_id for tier in ladder.tiers})
    return Programme(ladder, promotions)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ProgrammeConfigError(f"{path}: {error}") from error


def _ladder(path: Path, entries: list[dict[str, Any]]) -> TierLadder:
    if not 1 <= len(entries) <= TIERS_MAX:
        raise ProgrammeConfigError(f"{path}: between 1 and {TIERS_MAX} [[tier]] entries")
    tiers = []
    for index, entry in enumerate(entries):
        where = f"{path}: tier {index + 1}"
        _only_keys(where, entry, {"tier_id", "name", "threshold_points", "earn_multiplier"})
        threshold_points = entry.get("threshold_points")
        if not isinstance(threshold_points, int) or threshold_points < 0:
            raise ProgrammeConfigError(f"{where}: threshold_points must be an integer >= 0")
        multiplier = _decimal(where, entry, "earn_multiplier")
        if multiplier < 1:
            raise ProgrammeConfigError(f"{where}: earn_multiplier must be at least 1")
        tier_id = _identifier(where, entry, "tier_id")
        tiers.append(Tier(tier_id, str(entry.get("name", tier_id)), threshold_points, multiplier))
    thresholds = [tier.threshold_points for tier in tiers]
    if thresholds[0] != 0 or thresholds != sorted(set(thresholds)):
        raise ProgrammeConfigError(f"{path}: thresholds must start at 0 and strictly ascend")
    if len({tier.tier_id for tier in tiers}) != len(tiers):
        raise ProgrammeConfigError(f"{path}: tier ids must be unique")
    return TierLadder(tuple(tiers))


PROMOTION_KEYS = {
    "promotion_id",
    "starts_at",
    "ends_at",
    "funded_by",
    "time_zone",
    "partner_ids",
    "member_day",
    "weekdays",
    "birthday_month",
    "birthday_day",
    "tier_ids",
    "multiplier",
    "bonus_points",
    "spend_amount_minor_min",
    "spend_currency",
    "first_purchase",
    "grants_per_member_max",
    "cap_period",
    "budget_points",
    "budget_amount_minor",
    "budget_currency",
    "referral_referred_points",
    "referral_referrer_points",
}
REFERRAL_KEYS = ("referral_referred_points", "referral_referrer_points")
# What a referral campaign may say besides its reward: when, where, who pays.
REFERRAL_CAMPAIGN_KEYS = {"promotion_id", "starts_at", "ends_at", "funded_by", "time_zone"}
REFERRAL_CAMPAIGN_KEYS |= {"partner_ids", *REFERRAL_KEYS}
BONUS_POINTS_MAX = 1_000_000_000
BUDGET_POINTS_MAX = 10**15
BUDGET_AMOUNT_MINOR_MAX = AMOUNT_MINOR_MAX
GRANTS_PER_MEMBER_MAX = 1_000_000


class PromotionFieldError(ProgrammeConfigError):
    """A promotion's field is invalid: `key` names it, so that the API can say which."""

    def __init__(self, where: str, key: str, description: str) -> None:
        super().__init__(f"{where}: {description}")
        self.key = key
        self.description = description


def _promotions(
    path: Path, entries: list[dict[str, Any]], tier_ids: set[str]
) -> tuple[Promotion, ...]:
    if len(entries) > PROMOTIONS_MAX:
        raise ProgrammeConfigError(f"{path}: at most {PROMOTIONS_MAX} promotions")
    promotions = tuple(
        promotion_from_entry(f"{path}: promotion {index + 1}", entry, tier_ids)
        for index, entry in enumerate(entries)
    )
    if len({p.promotion_id for p in promotions}) != len(promotions):
        raise ProgrammeConfigError(f"{path}: promotion ids must be unique")
    return promotions


def promotion_from_entry(
    where: str,
    entry: dict[str, Any],
    tier_ids: set[str] | None,
    owner_partner_id: str | None = None,
    version: int = 1,
    state: str = "active",
) -> Promotion:
    """A promotion from its definition (a TOML table, or what the API and the database hold:
    the same keys, instants as datetimes); every fault names its key. `tier_ids`: the
    ladder's, that a tier filter must name (None: not checked, for definitions already
    stored: a tier removed from the ladder later makes its filter match no one)."""
    unknown = sorted(set(entry) - PROMOTION_KEYS)
    if unknown:
        raise PromotionFieldError(where, unknown[0], f"unknown keys {', '.join(unknown)}")
    funded_by = entry.get("funded_by")
    if funded_by not in (FUNDED_BY_PARTNER, FUNDED_BY_COALITION):
        raise PromotionFieldError(where, "funded_by", "funded_by must be 'partner' or 'coalition'")
    referral = any(key in entry for key in REFERRAL_KEYS)
    if sum(("multiplier" in entry, "bonus_points" in entry, referral)) != 1:
        raise PromotionFieldError(
            where, "multiplier", "exactly one of multiplier, bonus_points or a referral reward"
        )
    if referral:
        _check_referral_campaign(where, entry, funded_by)
    multiplier = _decimal(where, entry, "multiplier") if "multiplier" in entry else None
    if multiplier is not None and (multiplier <= 1 or multiplier > 100):
        raise PromotionFieldError(where, "multiplier", "multiplier must be above 1, at most 100")
    bonus_points = _count(where, entry, "bonus_points", BONUS_POINTS_MAX)
    member_day = _count(where, entry, "member_day", 31)
    weekdays = _weekdays(where, entry)
    tiers = _id_set(where, entry, "tier_ids")
    if tiers is not None and tier_ids is not None and not tiers <= tier_ids:
        raise PromotionFieldError(where, "tier_ids", "tier_ids names tiers the ladder lacks")
    starts_at, ends_at = _instant(where, entry, "starts_at"), _instant(where, entry, "ends_at")
    if starts_at >= ends_at:
        raise PromotionFieldError(where, "ends_at", "starts_at must be before ends_at")
    spend_min = _count(where, entry, "spend_amount_minor_min", 10**15)
    spend_currency = entry.get("spend_currency")
    if (spend_min is None) != (spend_currency is None) or (
        spend_currency is not None
        and not (
            isinstance(spend_currency, str)
            and len(spend_currency) == 3
            and spend_currency.isupper()
        )
    ):
        raise PromotionFieldError(
            where,
            "spend_currency",
            "spend_amount_minor_min and spend_currency (ISO 4217) go together",
        )
    first_purchase = entry.get("first_purchase")
    if first_purchase is not None and first_purchase not in FIRST_PURCHASE_SCOPES:
        raise PromotionFieldError(
            where, "first_purchase", "first_purchase must be 'partner' or 'coalition'"
        )
    cap_period = entry.get("cap_period", "promotion")
    if cap_period not in CAP_PERIODS:
        raise PromotionFieldError(
            where, "cap_period", f"cap_period must be one of {', '.join(CAP_PERIODS)}"
        )
    partner_ids = _id_set(where, entry, "partner_ids")
    budget_amount_minor, budget_currency = _money_budget(where, entry, funded_by, partner_ids)
    if owner_partner_id is not None and (
        funded_by != FUNDED_BY_PARTNER or partner_ids != frozenset({owner_partner_id})
    ):
        raise PromotionFieldError(
            where, "funded_by", "a partner's own promotion is funded by it and runs only at it"
        )
    try:
        return Promotion(
            promotion_id=_identifier(where, entry, "promotion_id"),
            starts_at=starts_at,
            ends_at=ends_at,
            funded_by=funded_by,
            time_zone=str(entry.get("time_zone", "UTC")),
            partner_ids=partner_ids,
            member_day=member_day,
            weekdays=weekdays,
            birthday_month=_flag(where, entry, "birthday_month"),
            birthday_day=_flag(where, entry, "birthday_day"),
            tier_ids=tiers,
            multiplier=multiplier,
            bonus_points=bonus_points,
            spend_amount_minor_min=spend_min,
            spend_currency=spend_currency,
            first_purchase=first_purchase,
            grants_per_member_max=_count(
                where, entry, "grants_per_member_max", GRANTS_PER_MEMBER_MAX
            ),
            cap_period=cap_period,
            budget_points=_count(where, entry, "budget_points", BUDGET_POINTS_MAX),
            budget_amount_minor=budget_amount_minor,
            budget_currency=budget_currency,
            referral_referred_points=_count(
                where, entry, "referral_referred_points", BONUS_POINTS_MAX
            ),
            referral_referrer_points=_count(
                where, entry, "referral_referrer_points", BONUS_POINTS_MAX
            ),
            owner_partner_id=owner_partner_id,
            version=version,
            state=state,
        )
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise PromotionFieldError(where, "time_zone", f"time_zone: {error}") from error


def _check_referral_campaign(where: str, entry: dict[str, Any], funded_by: str) -> None:
    """A referral campaign: both sides' bonuses, coalition-funded (the bonus is a
    hub-initiated transaction, docs/programme.md), and no earn conditions."""
    for key in REFERRAL_KEYS:
        if key not in entry:
            raise PromotionFieldError(where, key, f"{key} is required in a referral campaign")
    others = sorted(set(entry) - REFERRAL_CAMPAIGN_KEYS)
    if others:
        raise PromotionFieldError(
            where, others[0], f"a referral campaign has no {', '.join(others)}"
        )
    if funded_by != FUNDED_BY_COALITION:
        raise PromotionFieldError(where, "funded_by", "a referral campaign is coalition-funded")


def _money_budget(
    where: str, entry: dict[str, Any], funded_by: str, partner_ids: frozenset[str] | None
) -> tuple[int | None, str | None]:
    """A budget in money is the funder's: a partner-funded promotion at one partner, in that
    partner's currency (checked against the partner where the partners are known)."""
    amount_minor = _count(where, entry, "budget_amount_minor", BUDGET_AMOUNT_MINOR_MAX)
    currency = entry.get("budget_currency")
    if (amount_minor is None) != (currency is None) or (
        currency is not None and not (isinstance(currency, str) and is_known_currency(currency))
    ):
        raise PromotionFieldError(
            where,
            "budget_currency",
            "budget_amount_minor and budget_currency (a known ISO 4217 code) go together",
        )
    if amount_minor is not None and (
        funded_by != FUNDED_BY_PARTNER or partner_ids is None or len(partner_ids) != 1
    ):
        raise PromotionFieldError(
            where,
            "budget_amount_minor",
            "a budget in money is the funding partner's: a partner-funded promotion at exactly "
            "one partner (a coalition-funded promotion takes budget_points)",
        )
    return amount_minor, currency


def _count(where: str, entry: dict[str, Any], key: str, value_max: int) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= value_max:
        raise PromotionFieldError(where, key, f"{key} must be an integer from 1 to {value_max:,}")
    return value


def _flag(where: str, entry: dict[str, Any], key: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise PromotionFieldError(where, key, f"{key} must be true or false")
    return value


def _weekdays(where: str, entry: dict[str, Any]) -> frozenset[int] | None:
    if "weekdays" not in entry:
        return None
    values = entry["weekdays"]
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 7 for v in values)
    ):
        raise PromotionFieldError(
            where, "weekdays", "weekdays must be a non-empty list of 1 (Monday) to 7 (Sunday)"
        )
    return frozenset(values)


def _only_keys(where: str, entry: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ProgrammeConfigError(f"{where}: unknown keys {', '.join(unknown)}")


def _identifier(where: str, entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value or len(value) > ID_LENGTH_MAX:
        raise PromotionFieldError(where, key, f"{key} must be 1 to {ID_LENGTH_MAX} characters")
    if not all(c.isascii() and (c.isalnum() or c in "-_.") for c in value):
        raise PromotionFieldError(where, key, f"{key} allows letters, digits, - _ . only")
    return value


def _id_set(where: str, entry: dict[str, Any], key: str) -> frozenset[str] | None:
    if key not in entry:
        return None
    values = entry[key]
    if (
        not isinstance(values, list)
        or not 0 < len(values) <= PROMOTIONS_MAX
        or not all(isinstance(v, str) and 0 < len(v) <= ID_LENGTH_MAX for v in values)
    ):
        raise PromotionFieldError(where, key, f"{key} must be a non-empty list of ids")
    return frozenset(values)


def _decimal(where: str, entry: dict[str, Any], key: str) -> Decimal:
    # Decimal text, never a TOML float: "1.5", not 1.5.
    value = entry.get(key)
    if not isinstance(value, str) or len(value) > 32:
        raise PromotionFieldError(where, key, f'{key} must be decimal text such as "1.5"')
    try:
        number = Decimal(value)
    except InvalidOperation as error:
        raise PromotionFieldError(where, key, f"{key} is not a decimal: {value!r}") from error
    if not number.is_finite():
        raise PromotionFieldError(where, key, f"{key} must be finite")
    return number


def _instant(where: str, entry: dict[str, Any], key: str) -> datetime:
    value = entry.get(key)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise PromotionFieldError(where, key, f"{key} must be a TOML datetime with an offset")
    return value
