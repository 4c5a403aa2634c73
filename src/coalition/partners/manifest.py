"""Partner manifests: parse and validate `partners/<partner_id>.toml`.

Pure: the only I/O is reading the manifest files. Every rule a manifest must satisfy lives
here, so `coalition partners sync` can trust what it receives and only has to decide how the
database changes. The format is described field by field in docs/partners.md.
"""

from __future__ import annotations

import base64
import difflib
import itertools
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from coalition.domain.currency import is_known_currency
from coalition.domain.hub_partner import HUB_PARTNER_ID
from coalition.domain.occurrence import BACKDATING_DAYS_MAX_DEFAULT, BACKDATING_DAYS_MAX_LIMIT

__all__ = [
    "ManifestError",
    "PartnerManifest",
    "RateVersionManifest",
    "load_manifest",
    "load_manifests",
]

_PARTNER_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_KIND_PATTERN = re.compile(r"[a-z_]{1,50}")
# No sign, exponent, spaces or underscores (Decimal() itself accepts "1_000", "1e3", "NaN").
_DECIMAL_PATTERN = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?")
_ROLES_ALLOWED = ("partner", "merchant")
_ROLES_DEFAULT = ("partner",)
_NAME_LENGTH_MAX = 200
_POINTS_VALIDITY_MONTHS_MIN = 1
_POINTS_VALIDITY_MONTHS_MAX = 120
_POINTS_VALIDITY_NEVER = "never"
_RATE_FRACTION_DIGITS_MAX = 12
# 15 + 12 = 27 significant digits: a rate always fits the default 28-digit Decimal context.
_RATE_INTEGER_DIGITS_MAX = 15
_RATE_VERSIONS_COUNT_MAX = 1_000
_MANIFEST_SIZE_BYTES_MAX = 1 << 20
_MANIFESTS_COUNT_MAX = 10_000

_TOP_LEVEL_KEYS_REQUIRED = ("name", "kind", "currency", "points_validity_months", "rate_versions")
_TOP_LEVEL_KEYS_OPTIONAL = ("partner_id", "roles", "settlement_public_key", "backdating_days_max")
_RATE_KEYS_REQUIRED = (
    "effective_from",
    "earn_points_per_unit",
    "burn_value_minor_per_point",
    "issuance_price_minor_per_point",
    "redemption_price_minor_per_point",
)
_RATE_KEYS_OPTIONAL = ("native_points_rate",)


@dataclass(frozen=True)
class RateVersionManifest:
    effective_from: datetime
    earn_points_per_unit: Decimal
    native_points_rate: Decimal | None
    burn_value_minor_per_point: Decimal
    issuance_price_minor_per_point: Decimal
    redemption_price_minor_per_point: Decimal

    def __post_init__(self) -> None:
        # Checked again here because sync and tests also build versions by hand: a float or a
        # naive datetime must never reach the rate tables, whoever built the value.
        if self.effective_from.utcoffset() != timedelta(0):
            raise ValueError(f"effective_from must be timezone-aware UTC: {self.effective_from}")
        rates = (
            self.earn_points_per_unit,
            self.native_points_rate,
            self.burn_value_minor_per_point,
            self.issuance_price_minor_per_point,
            self.redemption_price_minor_per_point,
        )
        if not all(rate is None or isinstance(rate, Decimal) for rate in rates):
            raise TypeError(f"rates must be Decimal, never float: {rates}")


@dataclass(frozen=True)
class PartnerManifest:
    partner_id: str
    name: str
    kind: str
    currency: str
    roles: tuple[str, ...]
    points_validity_months: int | None
    rate_versions: tuple[RateVersionManifest, ...]
    # Base64 of the raw Ed25519 key the partner countersigns settlement statements with.
    settlement_public_key: str | None = None
    # How many days before now an operation's occurred_at may lie (domain/occurrence.py).
    backdating_days_max: int = BACKDATING_DAYS_MAX_DEFAULT

    def __post_init__(self) -> None:
        # Rate lookup picks the greatest effective_from <= occurred_at, which is only
        # well defined when versions exist and start at distinct, increasing instants.
        starts = [version.effective_from for version in self.rate_versions]
        if not starts or any(later <= earlier for earlier, later in itertools.pairwise(starts)):
            raise ValueError(f"{self.partner_id}: rate versions must be non-empty and increasing")


class ManifestError(ValueError):
    """A manifest is unreadable or invalid; the message names the file and the field."""


class _FieldInvalid(Exception):
    """Raised by the field parsers, which do not know the file; load_manifest adds it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


def load_manifest(path: Path) -> PartnerManifest:
    """Read and validate one manifest; the partner id is the file stem."""
    document = _read_toml(path)
    try:
        return _parse_manifest(document, file_stem=path.stem, file_suffix=path.suffix)
    except _FieldInvalid as error:
        raise ManifestError(f"{path}: {error}") from None


def load_manifests(directory: Path) -> list[PartnerManifest]:
    """Every `*.toml` in `directory`, sorted by partner id; fails on the first bad file."""
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory of partner manifests")
    # partner_id equals the stem once validated, so sorting by stem sorts by partner id.
    paths = sorted(directory.glob("*.toml"), key=lambda path: path.stem)
    if not paths:
        raise ManifestError(f"{directory}: holds no partner manifests (*.toml)")
    if len(paths) > _MANIFESTS_COUNT_MAX:
        raise ManifestError(f"{directory}: more than {_MANIFESTS_COUNT_MAX} manifests")
    return [load_manifest(path) for path in paths]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            content = file.read(_MANIFEST_SIZE_BYTES_MAX + 1)
    except OSError as error:
        raise ManifestError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(content) > _MANIFEST_SIZE_BYTES_MAX:
        raise ManifestError(f"{path}: larger than {_MANIFEST_SIZE_BYTES_MAX} bytes")
    try:
        return tomllib.loads(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ManifestError(f"{path}: not valid TOML: {error}") from None


def _parse_manifest(document: dict[str, Any], file_stem: str, file_suffix: str) -> PartnerManifest:
    _check_keys(document, _TOP_LEVEL_KEYS_REQUIRED, _TOP_LEVEL_KEYS_OPTIONAL, prefix="")
    return PartnerManifest(
        partner_id=_parse_partner_id(file_stem, file_suffix, document.get("partner_id")),
        name=_parse_name(document["name"]),
        kind=_parse_kind(document["kind"]),
        currency=_parse_currency(document["currency"]),
        roles=_parse_roles(document.get("roles", list(_ROLES_DEFAULT))),
        points_validity_months=_parse_points_validity_months(document["points_validity_months"]),
        rate_versions=_parse_rate_versions(document["rate_versions"]),
        settlement_public_key=_parse_settlement_public_key(document.get("settlement_public_key")),
        backdating_days_max=_parse_backdating_days_max(
            document.get("backdating_days_max", BACKDATING_DAYS_MAX_DEFAULT)
        ),
    )


def _check_keys(
    table: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...], prefix: str
) -> None:
    # Unknown keys first: a typo shows up as both unknown and missing, and the unknown key
    # is the one whose message can suggest the fix.
    known = required + optional
    for key in sorted(table):
        if key not in known:
            suggestion = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {suggestion[0]!r}?" if suggestion else ""
            raise _FieldInvalid(
                f"{prefix}{key}", f"unknown key (allowed: {', '.join(known)}){hint}"
            )
    for key in required:
        if key not in table:
            raise _FieldInvalid(f"{prefix}{key}", "missing (required)")


def _parse_partner_id(file_stem: str, file_suffix: str, declared: object) -> str:
    if file_suffix != ".toml":
        raise _FieldInvalid("partner_id", "the manifest file name must be <partner_id>.toml")
    if not _PARTNER_ID_PATTERN.fullmatch(file_stem):
        raise _FieldInvalid(
            "partner_id",
            f"file stem {file_stem!r} must match {_PARTNER_ID_PATTERN.pattern} "
            "(lower-case letters, digits and '-', 2 to 63 characters)",
        )
    if file_stem == HUB_PARTNER_ID:
        raise _FieldInvalid("partner_id", f"{file_stem!r} is reserved for the hub itself")
    if declared is not None and declared != file_stem:
        raise _FieldInvalid(
            "partner_id", f"{declared!r} differs from the file stem {file_stem!r}; they must match"
        )
    return file_stem


def _parse_settlement_public_key(value: object) -> str | None:
    if value is None:
        return None
    text = _require_string(value, "settlement_public_key")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    # Exactly the canonical encoding of 32 bytes, so one key has one spelling in the database.
    if len(raw) != 32 or base64.b64encode(raw).decode() != text:
        raise _FieldInvalid(
            "settlement_public_key", "must be standard base64 of a raw 32-byte Ed25519 public key"
        )
    return text


def _parse_name(value: object) -> str:
    name = _require_string(value, "name")
    if not name.strip():
        raise _FieldInvalid("name", "must not be empty")
    if name != name.strip():
        raise _FieldInvalid("name", "must not start or end with whitespace")
    if len(name) > _NAME_LENGTH_MAX:
        raise _FieldInvalid("name", f"longer than {_NAME_LENGTH_MAX} characters")
    # Names end up in statements, logs and terminals; control characters would corrupt them.
    if not name.isprintable():
        raise _FieldInvalid("name", "must not contain control characters")
    return name


def _parse_kind(value: object) -> str:
    kind = _require_string(value, "kind")
    if not _KIND_PATTERN.fullmatch(kind):
        raise _FieldInvalid(
            "kind", f"{kind!r} must match {_KIND_PATTERN.pattern}, e.g. 'coffee_chain'"
        )
    return kind


def _parse_currency(value: object) -> str:
    currency = _require_string(value, "currency")
    if not is_known_currency(currency):
        raise _FieldInvalid(
            "currency", f"{currency!r} is not a known ISO 4217 code (upper case, e.g. 'CNY')"
        )
    return currency


def _parse_roles(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
        raise _FieldInvalid("roles", 'must be an array of strings such as ["partner"]')
    if not value:
        raise _FieldInvalid("roles", "must name at least one role")
    for role in value:
        if role not in _ROLES_ALLOWED:
            raise _FieldInvalid(
                "roles", f"{role!r} is not a partner role (allowed: {', '.join(_ROLES_ALLOWED)})"
            )
    if len(set(value)) != len(value):
        raise _FieldInvalid("roles", "lists a role more than once")
    # Canonical order, so that reordering the array is not a change for sync to apply.
    return tuple(role for role in _ROLES_ALLOWED if role in value)


def _parse_points_validity_months(value: object) -> int | None:
    # TOML has no null, and "never expires" is a money decision (no breakage), so it is
    # spelled out as "never" instead of being what an omitted key silently means.
    if value == _POINTS_VALIDITY_NEVER:
        return None
    low, high = _POINTS_VALIDITY_MONTHS_MIN, _POINTS_VALIDITY_MONTHS_MAX
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldInvalid(
            "points_validity_months",
            f'must be an integer number of months ({low}..{high}) or "never", '
            f"not a TOML {_toml_type_name(value)}",
        )
    if not low <= value <= high:
        raise _FieldInvalid("points_validity_months", f"{value} is outside {low}..{high}")
    return value


def _parse_backdating_days_max(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldInvalid(
            "backdating_days_max",
            f"must be an integer number of days, not a TOML {_toml_type_name(value)}",
        )
    if not 0 <= value <= BACKDATING_DAYS_MAX_LIMIT:
        raise _FieldInvalid(
            "backdating_days_max", f"{value} is outside 0..{BACKDATING_DAYS_MAX_LIMIT}"
        )
    return value


def _parse_rate_versions(value: object) -> tuple[RateVersionManifest, ...]:
    if not isinstance(value, list) or not all(isinstance(table, dict) for table in value):
        raise _FieldInvalid("rate_versions", "must be an array of tables written [[rate_versions]]")
    if not value:
        raise _FieldInvalid("rate_versions", "must hold at least one version")
    if len(value) > _RATE_VERSIONS_COUNT_MAX:
        raise _FieldInvalid("rate_versions", f"more than {_RATE_VERSIONS_COUNT_MAX} versions")
    versions = tuple(_parse_rate_version(table, index) for index, table in enumerate(value))
    _check_versions_increasing(versions)
    return versions


def _check_versions_increasing(versions: tuple[RateVersionManifest, ...]) -> None:
    # Oldest first and strictly increasing: the file then reads as the partner's rate
    # history, and "the version in force at an instant" is never ambiguous.
    for index in range(1, len(versions)):
        earlier = versions[index - 1].effective_from
        later = versions[index].effective_from
        field = f"rate_versions[{index}].effective_from"
        if later == earlier:
            raise _FieldInvalid(
                field, f"duplicates rate_versions[{index - 1}].effective_from ({later.isoformat()})"
            )
        if later < earlier:
            raise _FieldInvalid(
                field,
                f"{later.isoformat()} is before rate_versions[{index - 1}].effective_from "
                f"({earlier.isoformat()}); list versions oldest first",
            )


def _parse_rate_version(table: dict[str, Any], index: int) -> RateVersionManifest:
    prefix = f"rate_versions[{index}]."
    _check_keys(table, _RATE_KEYS_REQUIRED, _RATE_KEYS_OPTIONAL, prefix=prefix)
    # Absent, not zero, means the partner offers no conversion: a zero rate would convert
    # native points into nothing.
    native_present = "native_points_rate" in table
    return RateVersionManifest(
        effective_from=_parse_effective_from(table["effective_from"], f"{prefix}effective_from"),
        earn_points_per_unit=_parse_rate(table, prefix, "earn_points_per_unit", zero_allowed=False),
        native_points_rate=_parse_rate(table, prefix, "native_points_rate", zero_allowed=False)
        if native_present
        else None,
        burn_value_minor_per_point=_parse_rate(
            table, prefix, "burn_value_minor_per_point", zero_allowed=False
        ),
        issuance_price_minor_per_point=_parse_rate(
            table, prefix, "issuance_price_minor_per_point", zero_allowed=True
        ),
        redemption_price_minor_per_point=_parse_rate(
            table, prefix, "redemption_price_minor_per_point", zero_allowed=True
        ),
    )


def _parse_effective_from(value: object, field: str) -> datetime:
    # datetime is a subclass of date, so it must be tested first.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _FieldInvalid(
                field,
                f"{value.isoformat()} is a local datetime; give its offset, "
                "e.g. 2025-01-01T00:00:00Z, so the instant does not depend on a server's zone",
            )
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise _FieldInvalid(
                field, f"{value.isoformat()} lies outside years 1 to 9999 in UTC"
            ) from None
    if isinstance(value, date):
        # A bare date means the start of that day in UTC (documented in docs/partners.md).
        return datetime.combine(value, time(0), tzinfo=UTC)
    raise _FieldInvalid(
        field,
        "must be an unquoted TOML offset datetime such as 2025-01-01T00:00:00Z, "
        f"not a TOML {_toml_type_name(value)}",
    )


def _parse_rate(table: dict[str, Any], prefix: str, key: str, *, zero_allowed: bool) -> Decimal:
    field = f"{prefix}{key}"
    rate = _parse_exact_decimal(table[key], field, zero_allowed=zero_allowed)
    if rate == 0 and not zero_allowed:
        raise _FieldInvalid(field, "must be > 0")
    return rate


def _parse_exact_decimal(value: object, field: str, *, zero_allowed: bool) -> Decimal:
    # Floats are never accepted, even "harmless" ones like 0.5: a float is not the decimal the
    # author wrote. A TOML integer is exact, so it is accepted as well as a decimal string.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _FieldInvalid(
            field,
            f'must be a decimal string such as "0.1", not a TOML {_toml_type_name(value)}',
        )
    text = value if isinstance(value, str) else str(value)
    match = _DECIMAL_PATTERN.fullmatch(text)
    if match is None:
        raise _FieldInvalid(
            field,
            f'{text!r} is not a plain decimal such as "0.1" '
            "(digits and one optional point; no exponent, spaces, underscores, NaN or Infinity)",
        )
    sign, integer_digits, fraction_digits = match.group(1), match.group(2), match.group(3) or ""
    if sign:
        raise _FieldInvalid(
            field, f"{text} is negative; must be {'>= 0' if zero_allowed else '> 0'}"
        )
    if len(fraction_digits) > _RATE_FRACTION_DIGITS_MAX:
        raise _FieldInvalid(
            field, f"{text} has more than {_RATE_FRACTION_DIGITS_MAX} fractional digits"
        )
    if len(integer_digits) > _RATE_INTEGER_DIGITS_MAX:
        raise _FieldInvalid(
            field, f"{text} has more than {_RATE_INTEGER_DIGITS_MAX} integer digits"
        )
    return Decimal(text)


def _require_string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _FieldInvalid(field, f"must be a string, not a TOML {_toml_type_name(value)}")
    return value


def _toml_type_name(value: object) -> str:
    # Order matters: bool is an int, and datetime is a date.
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (datetime, "datetime"),
        (date, "date"),
        (time, "time"),
        (list, "array"),
        (dict, "table"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)
