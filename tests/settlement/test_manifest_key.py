"""The optional `settlement_public_key` of partner manifests."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from coalition.partners.manifest import ManifestError, load_manifest

pytestmark = pytest.mark.unit

MANIFEST = """
name = "Key Coffee"
kind = "coffee_chain"
currency = "CNY"
points_validity_months = 24
{key_line}

[[rate_versions]]
effective_from = 2025-01-01T00:00:00Z
earn_points_per_unit = "0.1"
burn_value_minor_per_point = "5"
issuance_price_minor_per_point = "6"
redemption_price_minor_per_point = "4.5"
"""


def write(tmp_path: Path, key_line: str) -> Path:
    path = tmp_path / "key-coffee.toml"
    path.write_text(MANIFEST.format(key_line=key_line))
    return path


def test_a_manifest_may_declare_its_acknowledgement_key(tmp_path: Path) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    assert (
        load_manifest(write(tmp_path, f'settlement_public_key = "{key}"')).settlement_public_key
        == key
    )
    assert load_manifest(write(tmp_path, "")).settlement_public_key is None


@pytest.mark.parametrize(
    "value",
    [
        '"not base64!"',
        f'"{base64.b64encode(bytes(31)).decode()}"',  # 31 bytes
        f'"{base64.b64encode(bytes(33)).decode()}"',
        f'"{base64.b64encode(bytes(32)).decode().rstrip("=")}"',  # unpadded spelling
        "32",
    ],
)
def test_a_malformed_key_is_refused_naming_the_field(tmp_path: Path, value: str) -> None:
    with pytest.raises(ManifestError, match="settlement_public_key"):
        load_manifest(write(tmp_path, f"settlement_public_key = {value}"))
