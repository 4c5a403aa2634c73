"""ISO 4217 currencies the hub accepts, with the number of digits of their minor unit."""

# Exponent of the minor unit: 2 means 100 minor units make one major unit (cents, fen).
# The list is deliberately closed: an unknown code is a client mistake, not a guess.
MINOR_UNIT_EXPONENTS: dict[str, int] = {
    "AED": 2,
    "AUD": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "MOP": 2,
    "MXN": 2,
    "MYR": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PHP": 2,
    "PLN": 2,
    "QAR": 2,
    "SAR": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "TND": 3,
    "TRY": 2,
    "TWD": 2,
    "USD": 2,
    "VND": 0,
    "ZAR": 2,
}


def is_known_currency(code: str) -> bool:
    return code in MINOR_UNIT_EXPONENTS


def minor_units_per_major_unit(code: str) -> int:
    """100 for CNY or EUR, 1 for JPY, 1000 for KWD. Raises KeyError for an unknown code."""
    return int(10 ** MINOR_UNIT_EXPONENTS[code])
