"""The bundled reference scripts: the script-era `create_ca` / `sign_tls_csr` /
`sign_ca_csr` / `create_device_ca`, as templates with two placeholders.

They live in the top-level `scripts/` folder of the source tree and ship inside the wheel as
`fioca/_scripts/`. The sandbox renders them into its POST answers exactly as `render()`
does here, so a sandbox answer audits byte for byte equal to the reference.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SCRIPT_NAMES = ("create_ca", "sign_tls_csr", "sign_ca_csr", "create_device_ca")

FACTORY_PLACEHOLDER = "@@FACTORY@@"
LOCAL_CA_CN_PLACEHOLDER = "@@LOCAL_CA_CN@@"


def _scripts_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    installed = package / "_scripts"
    return installed if installed.is_dir() else package.parent / "scripts"


@cache
def templates() -> dict[str, str]:
    """Each reference script's template text, by script name."""
    folder = _scripts_dir()
    return {name: (folder / name).read_text(encoding="utf-8") for name in SCRIPT_NAMES}


def render(template: str, *, factory: str, local_ca_cn: str) -> str:
    return template.replace(FACTORY_PLACEHOLDER, factory).replace(LOCAL_CA_CN_PLACEHOLDER, local_ca_cn)


def rendered(*, factory: str, local_ca_cn: str) -> dict[str, str]:
    """The four scripts as a server renders them for one factory and one user."""
    return {name: render(text, factory=factory, local_ca_cn=local_ca_cn) for name, text in templates().items()}


def infer_values(scripts: dict[str, str]) -> tuple[str, str] | None:
    """(factory, local CA CN) that would render these scripts from the references, if any.

    Lets an answer saved from another machine be compared with the references without asking
    a server who the factory and the user were.
    """
    factory = cn = None
    for name, template in templates().items():
        text = scripts.get(name)
        if text is None:
            continue
        pattern = re.escape(template)
        for placeholder, group in ((FACTORY_PLACEHOLDER, "factory"), (LOCAL_CA_CN_PLACEHOLDER, "cn")):
            escaped = re.escape(placeholder)
            first = pattern.find(escaped)
            if first >= 0:
                pattern = (
                    pattern[:first] + f"(?P<{group}>[^\\n]*?)" + pattern[first + len(escaped):].replace(
                        escaped, f"(?P={group})"
                    )
                )
        found = re.fullmatch(pattern, text)
        if not found:
            continue
        factory = factory or found.groupdict().get("factory")
        cn = cn or found.groupdict().get("cn")
    if factory and cn:
        return factory, cn
    return None
