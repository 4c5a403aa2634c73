"""Partner manifests: the real partners/ directory, every rejection, and exact decimals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalition.partners.manifest import (
    ManifestError,
    PartnerManifest,
    RateVersionManifest,
    load_manifest,
    load_manifests,
)

pytestmark = pytest.mark.unit

PARTNERS_DIRECTORY = Path(__file__).resolve().parents[2] / "partners"

VALID_MANIFEST = """\
name = "Test Coffee"
kind = "coffee_chain"
currency = "CNY"
points_validity_months = 24

[[rate_versions]]
effective_from = 2025-01-01T00:00:00Z
earn_points_per_unit = "0.1"
burn_value_minor_per_point = "7"
issuance_price_minor_per_point = "7.5"
redemption_price_minor_per_point = "6.5"

[[rate_versions]]
effective_from = 2026-07-01T00:00:00Z
earn_points_per_unit = "0.2"
burn_value_minor_per_point = "7"
issuance_price_minor_per_point = "7.5"
redemption_price_minor_per_point = "6.5"
"""


def write_manifest(directory: Path, text: str, partner_id: str = "test-coffee") -> Path:
    path = directory / f"{partner_id}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def replace_once(text: str, old: str, new: str) -> str:
    # Guards the fixtures themselves: a mutation that silently did nothing would make an
    # error test pass for the wrong reason.
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def assert_rejected(path: Path, field: str, problem: str) -> None:
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert problem in message, message


# --- the real manifests -------------------------------------------------------------------


def test_real_partners_directory_loads() -> None:
    manifests = load_manifests(PARTNERS_DIRECTORY)

    partner_ids = [manifest.partner_id for manifest in manifests]
    assert partner_ids == sorted(partner_ids)
    kinds = {manifest.kind for manifest in manifests}
    assert {"coffee_chain", "supermarket", "airline", "cinema"} <= kinds
    currencies = {manifest.currency for manifest in manifests}
    assert {"CNY", "EUR"} <= currencies
    assert currencies & {"GBP", "HKD"}
    assert sum(len(manifest.rate_versions) > 1 for manifest in manifests) >= 2


def test_real_partners_have_consistent_economics() -> None:
    manifests = load_manifests(PARTNERS_DIRECTORY)

    by_kind = {manifest.kind: manifest for manifest in manifests}
    assert all(v.native_points_rate for v in by_kind["airline"].rate_versions)
    for manifest in manifests:
        assert manifest.points_validity_months is not None
        for version in manifest.rate_versions:
            # The hub's margin: partners pay more per point issued than the hub pays back.
            assert version.issuance_price_minor_per_point > version.redemption_price_minor_per_point
            assert version.effective_from.tzinfo is UTC


# --- accepted forms -----------------------------------------------------------------------


def test_valid_manifest_parses_to_exact_values(tmp_path: Path) -> None:
    manifest = load_manifest(write_manifest(tmp_path, VALID_MANIFEST))

    assert manifest == PartnerManifest(
        partner_id="test-coffee",
        name="Test Coffee",
        kind="coffee_chain",
        currency="CNY",
        roles=("partner",),
        points_validity_months=24,
        rate_versions=(
            RateVersionManifest(
                effective_from=datetime(2025, 1, 1, tzinfo=UTC),
                earn_points_per_unit=Decimal("0.1"),
                native_points_rate=None,
                burn_value_minor_per_point=Decimal("7"),
                issuance_price_minor_per_point=Decimal("7.5"),
                redemption_price_minor_per_point=Decimal("6.5"),
            ),
            RateVersionManifest(
                effective_from=datetime(2026, 7, 1, tzinfo=UTC),
                earn_points_per_unit=Decimal("0.2"),
                native_points_rate=None,
                burn_value_minor_per_point=Decimal("7"),
                issuance_price_minor_per_point=Decimal("7.5"),
                redemption_price_minor_per_point=Decimal("6.5"),
            ),
        ),
    )


def test_offset_datetime_is_converted_to_utc(tmp_path: Path) -> None:
    text = replace_once(VALID_MANIFEST, "2025-01-01T00:00:00Z", "2025-01-01T08:00:00+08:00")

    version = load_manifest(write_manifest(tmp_path, text)).rate_versions[0]

    assert version.effective_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert version.effective_from.tzinfo is UTC


def test_date_means_midnight_utc(tmp_path: Path) -> None:
    text = replace_once(VALID_MANIFEST, "2025-01-01T00:00:00Z", "2025-01-01")

    version = load_manifest(write_manifest(tmp_path, text)).rate_versions[0]

    assert version.effective_from == datetime(2025, 1, 1, tzinfo=UTC)


def test_integer_rate_is_accepted_because_it_is_exact(tmp_path: Path) -> None:
    text = replace_once(
        VALID_MANIFEST, 'burn_value_minor_per_point = "7"', "burn_value_minor_per_point = 7"
    )

    version = load_manifest(write_manifest(tmp_path, text)).rate_versions[0]

    assert version.burn_value_minor_per_point == Decimal(7)
    assert isinstance(version.burn_value_minor_per_point, Decimal)


def test_optional_fields(tmp_path: Path) -> None:
    text = 'partner_id = "test-coffee"\nroles = ["merchant", "partner"]\n' + replace_once(
        VALID_MANIFEST, "points_validity_months = 24", 'points_validity_months = "never"'
    )
    text = replace_once(
        text,
        'earn_points_per_unit = "0.1"',
        'earn_points_per_unit = "0.1"\nnative_points_rate = "0.5"',
    )

    manifest = load_manifest(write_manifest(tmp_path, text))

    assert manifest.roles == ("partner", "merchant")
    assert manifest.points_validity_months is None
    assert manifest.rate_versions[0].native_points_rate == Decimal("0.5")
    assert manifest.rate_versions[1].native_points_rate is None


def test_zero_prices_are_allowed(tmp_path: Path) -> None:
    text = replace_once(VALID_MANIFEST, '"6.5"', '"0"')

    version = load_manifest(write_manifest(tmp_path, text)).rate_versions[0]

    assert version.redemption_price_minor_per_point == 0


# --- rejections: each names the file and the field ----------------------------------------

REJECTIONS = [
    pytest.param(
        'earn_points_per_unit = "0.1"',
        "earn_points_per_unit = 0.1",
        "rate_versions[0].earn_points_per_unit",
        'must be a decimal string such as "0.1", not a TOML float',
        id="float-rate",
    ),
    pytest.param(
        'burn_value_minor_per_point = "7"',
        "burn_value_minor_per_point = 7.0",
        "rate_versions[0].burn_value_minor_per_point",
        "not a TOML float",
        id="integer-valued-float-rate",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        "earn_points_per_unit = true",
        "rate_versions[0].earn_points_per_unit",
        "not a TOML boolean",
        id="boolean-rate",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        'earn_points_per_unit = "1E-1"',
        "rate_versions[0].earn_points_per_unit",
        "not a plain decimal",
        id="exponent",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        'earn_points_per_unit = "NaN"',
        "rate_versions[0].earn_points_per_unit",
        "not a plain decimal",
        id="nan",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        'earn_points_per_unit = "Infinity"',
        "rate_versions[0].earn_points_per_unit",
        "not a plain decimal",
        id="infinity",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        'earn_points_per_unit = "1_000"',
        "rate_versions[0].earn_points_per_unit",
        "not a plain decimal",
        id="underscore",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        'earn_points_per_unit = "0.0000000000001"',
        "rate_versions[0].earn_points_per_unit",
        "more than 12 fractional digits",
        id="thirteen-fractional-digits",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        'earn_points_per_unit = "1000000000000000"',
        "rate_versions[0].earn_points_per_unit",
        "more than 15 integer digits",
        id="too-many-integer-digits",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        'earn_points_per_unit = "0"',
        "rate_versions[0].earn_points_per_unit",
        "must be > 0",
        id="zero-earn",
    ),
    pytest.param(
        'redemption_price_minor_per_point = "6.5"',
        'redemption_price_minor_per_point = "-6.5"',
        "rate_versions[0].redemption_price_minor_per_point",
        "must be >= 0",
        id="negative-price",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        'earn_points_per_unit = "0.1"\nnative_points_rate = "0"',
        "rate_versions[0].native_points_rate",
        "must be > 0",
        id="zero-native-rate",
    ),
    pytest.param(
        'currency = "CNY"\n',
        "",
        "currency",
        "missing (required)",
        id="missing-currency",
    ),
    pytest.param(
        'burn_value_minor_per_point = "7"\n',
        "",
        "rate_versions[0].burn_value_minor_per_point",
        "missing (required)",
        id="missing-rate",
    ),
    pytest.param(
        'kind = "coffee_chain"',
        'kind = "coffee_chain"\ncolour = "teal"',
        "colour",
        "unknown key",
        id="unknown-top-level-key",
    ),
    pytest.param(
        'earn_points_per_unit = "0.1"',
        'earn_point_per_unit = "0.1"',
        "rate_versions[0].earn_point_per_unit",
        "did you mean 'earn_points_per_unit'?",
        id="misspelled-rate-key",
    ),
    pytest.param(
        'currency = "CNY"',
        'currency = "XYZ"',
        "currency",
        "not a known ISO 4217 code",
        id="unknown-currency",
    ),
    pytest.param(
        'currency = "CNY"',
        'currency = "cny"',
        "currency",
        "not a known ISO 4217 code",
        id="lower-case-currency",
    ),
    pytest.param(
        "2026-07-01T00:00:00Z",
        "2025-01-01T00:00:00Z",
        "rate_versions[1].effective_from",
        "duplicates rate_versions[0].effective_from",
        id="duplicate-effective-from",
    ),
    pytest.param(
        "2026-07-01T00:00:00Z",
        "2024-07-01T00:00:00Z",
        "rate_versions[1].effective_from",
        "list versions oldest first",
        id="versions-out-of-order",
    ),
    pytest.param(
        "2025-01-01T00:00:00Z",
        "2025-01-01T00:00:00",
        "rate_versions[0].effective_from",
        "is a local datetime",
        id="local-datetime",
    ),
    pytest.param(
        "2025-01-01T00:00:00Z",
        '"2025-01-01T00:00:00Z"',
        "rate_versions[0].effective_from",
        "not a TOML string",
        id="quoted-datetime",
    ),
    pytest.param(
        'name = "Test Coffee"',
        'partner_id = "other-coffee"\nname = "Test Coffee"',
        "partner_id",
        "differs from the file stem 'test-coffee'",
        id="partner-id-differs-from-stem",
    ),
    pytest.param(
        'name = "Test Coffee"',
        'name = " "',
        "name",
        "must not be empty",
        id="blank-name",
    ),
    pytest.param(
        'name = "Test Coffee"',
        f'name = "{"x" * 201}"',
        "name",
        "longer than 200 characters",
        id="long-name",
    ),
    pytest.param(
        'kind = "coffee_chain"',
        'kind = "Coffee Chain"',
        "kind",
        "must match",
        id="bad-kind",
    ),
    pytest.param(
        'kind = "coffee_chain"',
        'kind = "coffee_chain"\nroles = ["admin"]',
        "roles",
        "'admin' is not a partner role",
        id="hub-role",
    ),
    pytest.param(
        'kind = "coffee_chain"',
        'kind = "coffee_chain"\nroles = []',
        "roles",
        "at least one role",
        id="no-roles",
    ),
    pytest.param(
        'kind = "coffee_chain"',
        'kind = "coffee_chain"\nroles = ["partner", "partner"]',
        "roles",
        "more than once",
        id="repeated-role",
    ),
    pytest.param(
        "points_validity_months = 24",
        "points_validity_months = 121",
        "points_validity_months",
        "outside 1..120",
        id="validity-too-long",
    ),
    pytest.param(
        "points_validity_months = 24\n",
        "",
        "points_validity_months",
        "missing (required)",
        id="validity-must-be-explicit",
    ),
    pytest.param(
        "points_validity_months = 24",
        "points_validity_months = 24.0",
        "points_validity_months",
        "not a TOML float",
        id="validity-float",
    ),
    pytest.param(
        "effective_from = 2025-01-01T00:00:00Z",
        "effective_from = 0001-01-01T00:00:00+14:00",
        "rate_versions[0].effective_from",
        "outside years 1 to 9999 in UTC",
        id="effective-from-overflows-in-utc",
    ),
]


@pytest.mark.parametrize(("old", "new", "field", "problem"), REJECTIONS)
def test_invalid_manifest_is_rejected(
    tmp_path: Path, old: str, new: str, field: str, problem: str
) -> None:
    path = write_manifest(tmp_path, replace_once(VALID_MANIFEST, old, new))

    assert_rejected(path, field, problem)


@pytest.mark.parametrize("stem", ["Test_Coffee", "x", "-coffee", "coffee.chain"])
def test_bad_file_stem_is_rejected(tmp_path: Path, stem: str) -> None:
    path = write_manifest(tmp_path, VALID_MANIFEST, partner_id=stem)

    assert_rejected(path, "partner_id", f"file stem {stem!r} must match")


def test_single_rate_table_instead_of_array_is_rejected(tmp_path: Path) -> None:
    text = VALID_MANIFEST.split("\n\n[[rate_versions]]")[0] + (
        "\n[rate_versions]\neffective_from = 2025-01-01T00:00:00Z\n"
    )

    assert_rejected(write_manifest(tmp_path, text), "rate_versions", "[[rate_versions]]")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    # A key given twice is a TOML syntax error, reported with its line by tomllib.
    path = write_manifest(tmp_path, "name = 'again'\n" + VALID_MANIFEST)

    with pytest.raises(ManifestError, match="not valid TOML") as raised:
        load_manifest(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_directory_without_manifests_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a manifest", encoding="utf-8")

    with pytest.raises(ManifestError, match="no partner manifests"):
        load_manifests(tmp_path)


def test_load_manifests_sorts_and_stops_at_the_first_bad_file(tmp_path: Path) -> None:
    write_manifest(tmp_path, VALID_MANIFEST, partner_id="b-market")
    write_manifest(tmp_path, VALID_MANIFEST, partner_id="a-coffee")
    assert [m.partner_id for m in load_manifests(tmp_path)] == ["a-coffee", "b-market"]

    bad_path = write_manifest(tmp_path, replace_once(VALID_MANIFEST, '"CNY"', '"XXX"'), "c-air")
    with pytest.raises(ManifestError) as raised:
        load_manifests(tmp_path)
    assert str(raised.value).startswith(f"{bad_path}: currency: ")


def test_dataclasses_refuse_naive_datetimes_and_floats() -> None:
    rates = {
        "earn_points_per_unit": Decimal("0.1"),
        "native_points_rate": None,
        "burn_value_minor_per_point": Decimal("7"),
        "issuance_price_minor_per_point": Decimal("7.5"),
        "redemption_price_minor_per_point": Decimal("6.5"),
    }
    with pytest.raises(ValueError, match="timezone-aware UTC"):
        RateVersionManifest(effective_from=datetime(2025, 1, 1), **rates)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="never float"):
        RateVersionManifest(
            effective_from=datetime(2025, 1, 1, tzinfo=UTC),
            **(rates | {"earn_points_per_unit": 0.1}),  # type: ignore[arg-type]
        )


# --- exact decimals -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def property_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Module-scoped because hypothesis reuses a fixture across all examples of one test.
    yield tmp_path_factory.mktemp("decimal-round-trip")


@st.composite
def exact_rates(draw: st.DrawFn) -> Decimal:
    fraction_digits = draw(st.integers(min_value=0, max_value=12))
    # Up to 15 integer digits, the manifest's bound; at least one unit in the last place.
    unscaled = draw(st.integers(min_value=1, max_value=10 ** (15 + fraction_digits) - 1))
    return Decimal(f"{unscaled}E-{fraction_digits}")


@settings(max_examples=200, database=None, deadline=None)
@given(rate=exact_rates())
def test_decimal_strings_round_trip_exactly(property_directory: Path, rate: Decimal) -> None:
    rate_text = format(rate, "f")
    text = replace_once(VALID_MANIFEST, '"0.1"', f'"{rate_text}"')

    version = load_manifest(write_manifest(property_directory, text)).rate_versions[0]

    parsed = version.earn_points_per_unit
    assert parsed == rate
    # Same digits and exponent, not merely an equal value: "7.50" stays "7.50".
    assert parsed.as_tuple() == rate.as_tuple()
    assert format(parsed, "f") == rate_text
