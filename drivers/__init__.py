"""Pump drivers: one async pump interface; serial (New Era RS-232) and MQTT.

Imports nothing of pumpctl.
"""
