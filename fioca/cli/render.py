"""Text layouts of fioca's own: create's summary and the dry-run plan. (fioctl's layouts,
`show` and the CRL, are in `fioca.cli.fioctl_layout`.) Paths are quoted when a shell would
need them quoted, so any line can be copied into a command."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from fioca.text import quote_path

if TYPE_CHECKING:
    from fioca.pki.hsm import HsmSettings

def create_summary(result: Any, hsm: HsmSettings | None = None) -> dict[str, Any]:
    """What `keys ca create` reports at the end, as data (printed as text or JSON)."""
    summary = {
        "factory": result.answer.factory,
        "root_fingerprint_sha256": result.root_fingerprint,
        "gateway_hosts": result.gateway_hosts,
        "patched_fields": list(result.patch_body),
        "scripts": "server" if result.answer.scripts_from_server else "bundled reference",
        "files": {path.name: str(path) for path in result.stored},
    }
    if hsm is not None:
        summary["root_key"] = hsm.key_uri
    return summary


def create_summary_text(summary: dict[str, Any], hsm: HsmSettings | None = None) -> str:
    """The summary as text, ending with advice on keeping the root key (a file, or on the HSM token)."""
    lines = [
        f"Factory {summary['factory']} now has its own PKI.",
        f"Root of trust SHA-256 fingerprint: {summary['root_fingerprint_sha256']}",
        "Device gateway host names: " + ", ".join(summary["gateway_hosts"]),
        "Files:",
    ]
    lines += [f"  {name:<20} {quote_path(path)}" for name, path in summary["files"].items()]
    if hsm is None:
        lines.append("Keep factory_ca.key offline and backed up: the root of trust can be set only once.")
    else:  # HSM mode never makes factory_ca.key
        lines += [
            f"The root key is on HSM token '{hsm.token_label}' (object root-ca, id 01); no factory_ca.key exists.",
            "Back up the token as your HSM's vendor documents (the key cannot be exported), and keep "
            "factory_ca.pem and local-ca.key: the root of trust can be set only once.",
        ]
    return "\n".join(lines)


def _hsm_dry_run_lines(info: dict[str, Any]) -> list[str]:
    """The HSM part of the dry-run text, from the plan's `hsm_settings` (HsmSettings.describe())."""
    env = ", ".join(f"{name}={value}" for name, value in info["script_env"].items())
    return [
        f"HSM mode: the root key is made and used on token '{info['token_label']}' "
        f"(module {info['module']}); object {info['key']}",
        "  create_ca runs its HSM branch: pkcs11-tool --keypairgen (label root-ca, id 01), "
        "then openssl req with the pkcs11 engine",
        "  the signing scripts run openssl with -engine pkcs11 -CAkeyform engine; the PIN is read from env:HSM_PIN",
        f"  script environment (HSM mode only): {env}",
    ]


def dry_run_text(scripts: dict[str, str], plan: dict[str, Any], audit_line: str) -> str:
    """The scripts with their sizes and digests, then the numbered plan (with its HSM part, if any)."""
    lines: list[str] = []
    for name, text in scripts.items():
        digest = hashlib.sha256(text.encode()).hexdigest()
        lines.append(f"==> {name}  ({len(text.encode())} bytes, sha256 {digest})")
        lines.append(text.rstrip("\n"))
        lines.append("")
    lines.append("==> plan")
    lines.append(f"jail: {plan['jail']}")
    lines.append("work dirs: a fresh one for each script (private, 0700), removed after it")
    if plan["side_by_side"]:
        lines.append("order: a step starts once the steps it waits for are kept, each in its own jail; "
                     "what they print, the checks and the journal follow the plan's order")  # fmt: skip
    for number, step in enumerate(plan["steps"], 1):
        lines += [f"{number}. {line}" if index == 0 else f"   {line}" for index, line in enumerate(_step_lines(step, plan))]
    lines.append(audit_line)
    if plan.get("hsm_settings"):
        lines += _hsm_dry_run_lines(plan["hsm_settings"])
    lines.append("Dry run: no script was run, no key or certificate written, no PATCH sent.")
    return "\n".join(lines)


def _step_lines(step: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """One step of the plan: what it does, then its details, one per line."""
    if step["kind"] == "save":
        return [f"save in {quote_path(plan['pki_dir'])}: {step['what']}", f"files: {', '.join(step['files'])}"]
    if step["kind"] == "run":
        given = ", ".join([*step["stages"], "the four scripts (0700)"])
        return [
            step["progress"],
            f"run: {step['command']}   (cwd {quote_path(step['cwd'])}, in the jail)",
            *([f"starts once kept: {', '.join(step['waits_for'])}"] if plan["side_by_side"] and step["waits_for"] else []),
            f"given: {given}",
            f"produces: {', '.join(step['produces'])}",
            *(f"check: {check}" for check in step["checks"]),
            f"keep in {quote_path(plan['pki_dir'])} (0400): {', '.join(step['keeps'])}",
        ]
    if step["kind"] == "verify":
        return [f"{step['what']}: {', '.join(step['files'])}"]
    return [step["progress"], "PATCH certs/ with:", *(f"  {name}: {source}" for name, source in step["patch"].items())]
