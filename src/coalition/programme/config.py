"""Loading the programme (tier ladder and promotions) from `tiers.toml` and `promotions.toml`.

The programme is configuration, not data: every hub process loads the same files at start
(`coalition serve --programme DIR`, or COALITION_PROGRAMME_DIR in every worker process), and
earn reads it from memory, so promotions and tiers cost the hot path no query. Without a
directory the programme is one base tier with multiplier 1 and no promotions.
"""

from __future__ import annotations

import os
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

from coalition.domain.promotions import FUNDED_BY_COALITION, FUNDED_BY_PARTNER, Promotion
from coalition.domain.tiers import Tier, TierLadder

PROGRAMME_DIRECTORY_ENVIRONMENT_VARIABLE = "COALITION_PROGRAMME_DIR"
TIERS_FILE = "tiers.toml"
PROMOTIONS_FILE = "promotions.toml"
# Bounds on configuration, so that a runaway file cannot slow every earn down.
TIERS_MAX = 16
PROMOTIONS_MAX = 500
ID_LENGTH_MAX = 64

DEFAULT_LADDER = TierLadder((Tier("member", "Member", 0, Decimal(1)),))


class ProgrammeConfigError(RuntimeError):
    """A programme file is invalid; the message names the file and the entry."""


@dataclass(frozen=True)
class Programme:
    ladder: TierLadder
    promotions: tuple[Promotion, ...]

    def promotions_for(self, partner_id: str) -> tuple[Promotion, ...]:
        """Promotions that can apply to an earn with this partner (a few, from memory)."""
        return tuple(
            p for p in self.promotions if p.partner_ids is None or partner_id in p.partner_ids
        )


DEFAULT_PROGRAMME = Programme(DEFAULT_LADDER, ())


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


_lock = threading.Lock()
_active: Programme | None = None


def active_programme() -> Programme:
    """The programme of this process: set by `activate`, else read once from the directory
    named by COALITION_PROGRAMME_DIR (so spawned worker processes load the same files)."""
    global _active
    with _lock:
        if _active is None:
            directory = os.environ.get(PROGRAMME_DIRECTORY_ENVIRONMENT_VARIABLE)
            _active = load_programme(Path(directory)) if directory else DEFAULT_PROGRAMME
        return _active


def activate(programme: Programme | None) -> None:
    """Use `programme` in this process from now on (None: read the environment again)."""
    global _active
    with _lock:
        _active = programme


@contextmanager
def using_programme(programme: Programme) -> Iterator[Programme]:
    previous = _active
    activate(programme)
    try:
        yield programme
    finally:
        activate(previous)


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
    "birthday_month",
    "tier_ids",
    "multiplier",
    "bonus_points",
}


def _promotions(
    path: Path, entries: list[dict[str, Any]], tier_ids: set[str]
) -> tuple[Promotion, ...]:
    if len(entries) > PROMOTIONS_MAX:
        raise ProgrammeConfigError(f"{path}: at most {PROMOTIONS_MAX} promotions")
    promotions = tuple(
        _promotion(f"{path}: promotion {index + 1}", entry, tier_ids)
        for index, entry in enumerate(entries)
    )
    if len({p.promotion_id for p in promotions}) != len(promotions):
        raise ProgrammeConfigError(f"{path}: promotion ids must be unique")
    return promotions


def _promotion(where: str, entry: dict[str, Any], tier_ids: set[str]) -> Promotion:
    _only_keys(where, entry, PROMOTION_KEYS)
    funded_by = entry.get("funded_by")
    if funded_by not in (FUNDED_BY_PARTNER, FUNDED_BY_COALITION):
        raise ProgrammeConfigError(f"{where}: funded_by must be 'partner' or 'coalition'")
    if ("multiplier" in entry) == ("bonus_points" in entry):
        raise ProgrammeConfigError(f"{where}: exactly one of multiplier or bonus_points")
    multiplier = _decimal(where, entry, "multiplier") if "multiplier" in entry else None
    if multiplier is not None and multiplier <= 1:
        raise ProgrammeConfigError(f"{where}: multiplier must be above 1")
    bonus_points = entry.get("bonus_points")
    if bonus_points is not None and (not isinstance(bonus_points, int) or bonus_points <= 0):
        raise ProgrammeConfigError(f"{where}: bonus_points must be a positive integer")
    member_day = entry.get("member_day")
    if member_day is not None and (not isinstance(member_day, int) or not 1 <= member_day <= 31):
        raise ProgrammeConfigError(f"{where}: member_day must be a day of the month, 1 to 31")
    tiers = _id_set(where, entry, "tier_ids")
    if tiers is not None and not tiers <= tier_ids:
        raise ProgrammeConfigError(f"{where}: tier_ids names tiers the ladder lacks")
    starts_at, ends_at = _instant(where, entry, "starts_at"), _instant(where, entry, "ends_at")
    if starts_at >= ends_at:
        raise ProgrammeConfigError(f"{where}: starts_at must be before ends_at")
    try:
        return Promotion(
            promotion_id=_identifier(where, entry, "promotion_id"),
            starts_at=starts_at,
            ends_at=ends_at,
            funded_by=funded_by,
            time_zone=str(entry.get("time_zone", "UTC")),
            partner_ids=_id_set(where, entry, "partner_ids"),
            member_day=member_day,
            birthday_month=bool(entry.get("birthday_month", False)),
            tier_ids=tiers,
            multiplier=multiplier,
            bonus_points=bonus_points,
        )
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ProgrammeConfigError(f"{where}: time_zone: {error}") from error


def _only_keys(where: str, entry: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ProgrammeConfigError(f"{where}: unknown keys {', '.join(unknown)}")


def _identifier(where: str, entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value or len(value) > ID_LENGTH_MAX:
        raise ProgrammeConfigError(f"{where}: {key} must be 1 to {ID_LENGTH_MAX} characters")
    if not all(c.isalnum() or c in "-_." for c in value):
        raise ProgrammeConfigError(f"{where}: {key} allows letters, digits, - _ . only")
    return value


def _id_set(where: str, entry: dict[str, Any], key: str) -> frozenset[str] | None:
    if key not in entry:
        return None
    values = entry[key]
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ProgrammeConfigError(f"{where}: {key} must be a non-empty list of ids")
    return frozenset(values)


def _decimal(where: str, entry: dict[str, Any], key: str) -> Decimal:
    # Decimal text, never a TOML float: "1.5", not 1.5.
    value = entry.get(key)
    if not isinstance(value, str):
        raise ProgrammeConfigError(f'{where}: {key} must be decimal text such as "1.5"')
    try:
        number = Decimal(value)
    except InvalidOperation as error:
        raise ProgrammeConfigError(f"{where}: {key} is not a decimal: {value!r}") from error
    if not number.is_finite():
        raise ProgrammeConfigError(f"{where}: {key} must be finite")
    return number


def _instant(where: str, entry: dict[str, Any], key: str) -> datetime:
    value = entry.get(key)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ProgrammeConfigError(f"{where}: {key} must be a TOML datetime with an offset")
    return value
