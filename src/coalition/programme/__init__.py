"""Programme configuration: the tier ladder and the promotions, loaded from TOML files."""
