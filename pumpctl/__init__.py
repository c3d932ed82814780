"""pumpctl: supervision of infusion pumps through the daratumumab rate ladder and IRR rules."""

__version__ = "0.1.0"
