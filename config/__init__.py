"""Data shipped with pumpctl: protocol files, settings and broker configuration (no code)."""
