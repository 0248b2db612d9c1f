"""Devices: offline certificates (offline), online registration (register), sota.toml (sota), the gateway check (check)."""
