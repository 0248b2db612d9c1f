"""The script sets fioca knows, read from the top-level `scripts/` folder.

- `fioca`: fioca's own bundled `create_ca` / `sign_tls_csr` / `sign_ca_csr` /
  `create_device_ca`. They take every server value (the factory name, the local CA's CN) from
  the environment (`script_env`), which openssl reads itself: nothing is pasted into them.
  fioca runs them when an answer carries no scripts, and for the later root-signing commands.
- `api-2023`, `api-2026`: reconstructions of the scripts the Factory API sent, as templates the
  server renders by pasting the values in (`api_scripts`). The sandbox serves them; the audit
  recognises them byte for byte (`known_sets`).

The folder ships inside the wheel as `fioca/_scripts/`.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from fioca import facts, shapes

FIOCA = "fioca"
API_REVISIONS = ("api-2023", "api-2026")
SCRIPT_SETS = (FIOCA, *API_REVISIONS)

FACTORY_PLACEHOLDER = "@@FACTORY@@"
LOCAL_CA_CN_PLACEHOLDER = "@@LOCAL_CA_CN@@"


def _scripts_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    installed = package / "_scripts"
    return installed if installed.is_dir() else package.parent / "scripts"


@cache
def _texts(script_set: str) -> dict[str, str]:
    if script_set not in SCRIPT_SETS:
        raise ValueError(f"unknown script set {script_set!r}; one of {', '.join(SCRIPT_SETS)}")
    folder = _scripts_dir() if script_set == FIOCA else _scripts_dir() / script_set
    return {name: (folder / name).read_text(encoding="utf-8") for name in facts.SCRIPT_NAMES}


def bundled() -> dict[str, str]:
    """fioca's own four scripts, by name, exactly as they run."""
    return dict(_texts(FIOCA))


# The server values fioca's own scripts take from their environment, in script_env's order.
SCRIPT_VALUE_VARS = ("FACTORY", "LOCAL_CA_CN")


def script_env(*, factory: str, local_ca_cn: str) -> dict[str, str]:
    """The environment fioca's own scripts take their values from, each checked for its shape."""
    factory = shapes.factory_name(factory, "the settings")
    polis = local_ca_cn.removeprefix("fio-")
    if local_ca_cn != shapes.local_ca_cn(shapes.polis_id(polis, "the local CA's CN")):
        raise shapes.ShapeError(f"the local CA's CN must be fio-<polis-id>, got {local_ca_cn!r}")
    return dict(zip(SCRIPT_VALUE_VARS, (factory, local_ca_cn), strict=True))


def api_scripts(revision: str, *, factory: str, local_ca_cn: str) -> dict[str, str]:
    """The API's scripts of `revision` as the server renders them for one factory and user."""
    if revision not in API_REVISIONS:
        raise ValueError(f"unknown API script revision {revision!r}; one of {', '.join(API_REVISIONS)}")
    return {name: render(text, factory=factory, local_ca_cn=local_ca_cn) for name, text in _texts(revision).items()}


def known_sets(*, factory: str, local_ca_cn: str) -> dict[str, dict[str, str]]:
    """Every script set as it would read for this factory and user, by set name."""
    known = {FIOCA: bundled()}
    for revision in API_REVISIONS:
        known[revision] = api_scripts(revision, factory=factory, local_ca_cn=local_ca_cn)
    return known


def infer_values(scripts: dict[str, str]) -> tuple[str, str] | None:
    """(factory, local CA CN) that would render these scripts from an API revision, if any.

    Lets an answer saved on another machine be recognised without asking a server who the
    factory and the user were.
    """
    factory = cn = None
    for revision in API_REVISIONS:
        for name, template in _texts(revision).items():
            text = scripts.get(name)
            found = re.fullmatch(_template_pattern(template), text) if isinstance(text, str) else None
            if found:
                factory = factory or found.groupdict().get("factory")
                cn = cn or found.groupdict().get("cn")
    return (factory, cn) if factory and cn else None


@cache
def _template_pattern(template: str) -> str:
    pattern = re.escape(template)
    for placeholder, group in ((FACTORY_PLACEHOLDER, "factory"), (LOCAL_CA_CN_PLACEHOLDER, "cn")):
        escaped = re.escape(placeholder)
        first = pattern.find(escaped)
        if first >= 0:
            tail = pattern[first + len(escaped):].replace(escaped, f"(?P={group})")
            pattern = pattern[:first] + f"(?P<{group}>[^\\n]*?)" + tail
    return pattern


def render(template: str, *, factory: str, local_ca_cn: str) -> str:
    """Paste the values into a template, as a server renders its scripts."""
    return template.replace(FACTORY_PLACEHOLDER, factory).replace(LOCAL_CA_CN_PLACEHOLDER, local_ca_cn)
