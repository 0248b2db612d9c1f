"""What a script's text asks openssl to make: the contract between the audit and the checks.

The audit reads each `openssl req -x509` / `openssl x509 -req` / `openssl ca` command of a
script, with the config or extension file its here-documents wrote, and describes the
certificate it asks for as an `AskedCertificate`. After the script ran, create compares the
certificate it got with what was asked (`profiles.check_as_asked`): a script that asks for one
thing in its text and delivers another has not done what the auditor read.

Plain data, standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AskedExtension:
    """One extension line of an OpenSSL config, e.g. `keyUsage = critical, keyCertSign`."""

    name: str  # as OpenSSL's config names it: basicConstraints, keyUsage, subjectAltName ...
    critical: bool
    # The comma-separated values after `critical` (`CA:TRUE`, `pathlen:0`, `clientAuth` ...);
    # None when the value is computed at run time (`subjectAltName = $dns`).
    values: tuple[str, ...] | None


@dataclass(frozen=True)
class AskedCertificate:
    """One certificate a script's openssl command makes."""

    script: str
    line: int
    command: str  # "req -x509", "x509 -req" or "ca"
    output: str | None  # the file it writes (-out), or None for stdout
    self_signed: bool
    # -days as written; None when computed at run time (the audit reports that as a finding);
    # OpenSSL's default (30) when no -days is given.
    days: int | None
    digest: str | None  # -sha256 ... as written; None when OpenSSL's default applies
    # Every extension the config section or -extfile holds, in order; None when the audit
    # could not tell which file or section is used (also a finding).
    extensions: tuple[AskedExtension, ...] | None
    # The subject from the config's distinguished_name section ((attribute, value), ...) for a
    # `req`; None when it is copied from a CSR (`x509 -req`) or unknown.
    subject: tuple[tuple[str, str], ...] | None = None


def with_environment(asked: AskedCertificate, env: dict[str, str]) -> AskedCertificate:
    """`asked` as openssl reads it with `env`: each `$ENV::NAME` in the subject becomes its value
    (fioca's own scripts take the factory and the local CA's CN that way)."""
    if asked.subject is None:
        return asked
    subject = tuple((attribute, _expand(value, env)) for attribute, value in asked.subject)
    return replace(asked, subject=subject)


def _expand(value: str, env: dict[str, str]) -> str:
    prefix = "$ENV::"
    return env.get(value[len(prefix):], value) if value.startswith(prefix) else value
