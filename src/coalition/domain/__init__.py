"""Pure domain rules: points and money arithmetic, rates, rounding. No I/O lives here."""
