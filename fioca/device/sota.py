"""`sota.toml` for a device's sota dir, in the layout a registration server sends (fioca.sota_toml).

Used for offline devices, whose folder must hold what `/var/sota` needs without any server.
The gateway and OSTree hosts are the first two DNS names of `tls-crt`; the port is the real
gateway's 8443 unless the caller names another (the sandbox listens on a random port).
An unset value (no hardware id given) renders as `# <key> is not set`, as section 9 says, so
aktualizr-lite falls back to its own default.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fioca import sota_toml

GATEWAY_PORT = 8443
DEFAULT_SOTA_DIR = "/var/sota"


def gateway_port_from_url(url: str) -> int:
    """The port of a gateway URL such as `https://127.0.0.1:40123` (8443 when it has none)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"gateway URL {url!r} must look like https://HOST:PORT")
    return parts.port or GATEWAY_PORT


def render(
    *,
    gateway_host: str,
    ostree_host: str,
    port: int = GATEWAY_PORT,
    hardware_id: str | None = None,
    sota_dir: str = DEFAULT_SOTA_DIR,
    use_ostree_server: bool = True,
) -> str:
    """The text of sota.toml; sections in the documented order."""
    gateway_url = f"https://{gateway_host}:{port}"
    # As the registration server does: the OSTree proxy host, or the gateway's own treehub.
    ostree_url = f"https://{ostree_host}:{port}/ostree" if use_ostree_server else f"{gateway_url}/treehub"
    return sota_toml.render(
        gateway_url=gateway_url, ostree_url=ostree_url, hardware_id=hardware_id or None, sota_config_dir=sota_dir
    )


# Where a device's key and certificate are: `[import]`'s paths (aktualizr-lite reads them there).
KEY_PATH = "tls_pkey_path"
CERT_PATH = "tls_clientcert_path"
_STRING_LINE = re.compile(r'^(\s*([A-Za-z0-9_-]+)\s*=\s*)"([^"\\]*)"(.*)$')
_SECTION_LINE = re.compile(r"\s*\[([A-Za-z0-9_-]+)\]\s*")


def _string_values(text: str, section: str) -> dict[int, tuple[str, str]]:
    """{line index: (key, value)} for the one-line basic strings of `section`."""
    found: dict[int, tuple[str, str]] = {}
    current = None
    for index, line in enumerate(text.splitlines()):
        header = _SECTION_LINE.fullmatch(line)
        if header:
            current = header[1]
            continue
        match = _STRING_LINE.match(line)
        if current == section and match:
            found[index] = (match[2], match[3])
    return found


def import_paths(text: str) -> dict[str, str]:
    """`[import]`'s tls_pkey_path and tls_clientcert_path, those that are set."""
    return {key: value for key, value in _string_values(text, "import").values() if key in (KEY_PATH, CERT_PATH)}


def with_import_paths(text: str, paths: dict[str, str]) -> str:
    """`text` with `[import]`'s values for the keys of `paths` replaced; every other byte kept."""
    lines = text.splitlines(keepends=True)
    for index, (key, _value) in _string_values(text, "import").items():
        if key in paths:
            new = paths[key]
            if '"' in new or "\\" in new or "\n" in new:
                raise ValueError(f"{key} {new!r} cannot be written as a plain TOML string")
            match = _STRING_LINE.match(lines[index].rstrip("\r\n"))
            assert match is not None
            ending = lines[index][len(lines[index].rstrip("\r\n")) :]
            lines[index] = f'{match[1]}"{new}"{match[4]}{ending}'
    return "".join(lines)


def gateway_server(text: str) -> str | None:
    """`[tls] server` of a sota.toml (where the device talks to its gateway), None if absent."""
    import tomllib  # here: a batch that writes sota.toml never reads one

    try:
        server = tomllib.loads(text).get("tls", {}).get("server")
    except tomllib.TOMLDecodeError:
        return None
    return server if isinstance(server, str) else None
