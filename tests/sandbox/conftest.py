"""Sandbox test fixtures; the helpers themselves live in sandbox_helpers.py."""

from sandbox_helpers import client, configured, flow, sandbox  # noqa: F401  (pytest fixtures)
