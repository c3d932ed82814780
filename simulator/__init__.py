"""Pump simulator: the device side of the serial and MQTT contracts, on an injected clock."""
