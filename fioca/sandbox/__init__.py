"""The sandbox: a local emulation of the FoundriesFactory certs API and device gateway.

It imports nothing from `fioca.cli` or `fioca.api`: it is "the server" the client talks to.
"""

from fioca.sandbox.server import Sandbox, SandboxError, SandboxInfo, read_info

__all__ = ["Sandbox", "SandboxError", "SandboxInfo", "read_info"]
