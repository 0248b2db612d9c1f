"""`sota.toml` as a registration server renders it for lmp-device-register (PKI-SPEC section 9).

One layout for both sides: the sandbox's registration server sends it, and offline device
folders get the same file (fioca.device.sota). Defaults are TOML strings; `overrides` (section -> key -> a TOML value already quoted by the
client) replace or extend them, and an empty value means "unset", rendered as a comment.
"""

from __future__ import annotations

import json
import re

# A TOML bare key (sections and keys): anything else could smuggle in extra syntax.
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

Overrides = dict[str, dict[str, str]]


class SotaTomlError(ValueError):
    """The overrides cannot be rendered safely into sota.toml."""


def _quoted(value: str) -> str:
    # A JSON string is a valid TOML basic string for everything a path or URL holds.
    return json.dumps(value)


def default_sections(
    *, gateway_url: str, ostree_url: str, hardware_id: str | None, sota_config_dir: str
) -> dict[str, dict[str, str]]:
    """The sections in their documented order, each value already a TOML literal (a hardware id
    of None is unset)."""
    sota_dir = sota_config_dir.rstrip("/") or ""
    return {
        "tls": {
            "server": _quoted(gateway_url),
            "ca_source": _quoted("file"),
            "pkey_source": _quoted("file"),
            "cert_source": _quoted("file"),
        },
        "provision": {
            "server": _quoted(gateway_url),
            "primary_ecu_hardware_id": "" if hardware_id is None else _quoted(hardware_id),
        },
        "uptane": {
            "repo_server": _quoted(f"{gateway_url}/repo"),
            "key_source": _quoted("file"),
        },
        "pacman": {
            "type": _quoted("ostree+compose_apps"),
            "ostree_server": _quoted(ostree_url),
        },
        "storage": {
            "type": _quoted("sqlite"),
            "path": _quoted(f"{sota_dir}/"),
        },
        "import": {
            "tls_cacert_path": _quoted(f"{sota_dir}/root.crt"),
            "tls_pkey_path": _quoted(f"{sota_dir}/pkey.pem"),
            "tls_clientcert_path": _quoted(f"{sota_dir}/client.pem"),
        },
    }


def check_overrides(overrides: Overrides) -> list[str]:
    """What is wrong with `overrides` (one line per problem); [] when they can be rendered."""
    problems: list[str] = []
    for section, values in overrides.items():
        if not _BARE_KEY.match(section):
            problems.append(f"overrides: section {section!r} is not a TOML bare key")
        for key, value in values.items():
            if not _BARE_KEY.match(key):
                problems.append(f"overrides.{section}: key {key!r} is not a TOML bare key")
            if "\n" in value or "\r" in value:
                problems.append(f"overrides.{section}.{key}: the value must fit on one line")
    return problems


def render(
    *,
    gateway_url: str,
    ostree_url: str,
    hardware_id: str | None,
    sota_config_dir: str,
    overrides: Overrides | None = None,
) -> str:
    """The text of sota.toml; overrides merge into their sections, new sections go last."""
    problems = check_overrides(overrides or {})
    if problems:
        raise SotaTomlError("; ".join(problems))
    sections = default_sections(
        gateway_url=gateway_url, ostree_url=ostree_url, hardware_id=hardware_id, sota_config_dir=sota_config_dir
    )
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)

    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            # "" unsets a default; a literal empty string is sent as '""' by the client.
            lines.append(f"# {key} is not set" if value == "" else f"{key} = {value}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
