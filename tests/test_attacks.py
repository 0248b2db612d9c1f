"""Attacks on create from a hostile server and a co-located process (the attack review).

Each test is an attack that worked against fioca when it was written: the test says what
must hold (nothing chosen by the server or secret leaves, nothing runs that the audit did not
see), and fails until the hole is closed. Attacks that are design decisions for the lead are
marked xfail(strict=True) with the reason.
"""

from __future__ import annotations

import os
import re
import stat
import string
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fioca import facts
from fioca.errors import CheckError, ScriptError
from fioca.pki import hsm, profiles, reference, token_watch
from fioca.pki.asked import with_environment
from fioca.pki.profiles import der
from fioca.pki.audit import Severity, audit_scripts
from tests.conftest import FACTORY, answer_with, server_certs
from tests.test_hostile_server import BACKDATED_ROOT
from tests.test_hsm import MODULE, PIN, SO_PIN, Token, new_token


def api_scripts(sandbox) -> dict[str, str]:
    cn = f"fio-{sandbox.backend.user_self()['polis-id']}"
    return reference.api_scripts("api-2026", factory=FACTORY, local_ca_cn=cn)


def with_line(scripts: dict[str, str], name: str, before: str, added: str) -> dict[str, str]:
    """`scripts[name]` with `added` put just before the first `before`."""
    assert before in scripts[name], f"{before!r} not in {name}"
    return {name: scripts[name].replace(before, added + before, 1)}


def chosen_key_pem() -> tuple[ec.EllipticCurvePrivateKey, list[str]]:
    """A P-256 key 'the server' made, and its PEM lines."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    return key, pem.strip().splitlines()


def printf_lines(lines: list[str]) -> str:
    """Shell that prints `lines`, with no line of the script holding a PEM header whole."""
    split = [f"'{line[:16]}' '{line[16:]}'" for line in lines]
    return "; ".join(f"printf '%s%s\\n' {part}" for part in split)


def refused_before_running(result, recorder, pki: Path, sandbox, chosen: ec.EllipticCurvePrivateKey) -> None:
    if (pki / facts.ROOT_KEY).exists():
        stored = serialization.load_pem_private_key((pki / facts.ROOT_KEY).read_bytes(), None)
        assert stored.private_numbers() != chosen.private_numbers(), "the server's own key became the root of trust"
    assert result.exit_code == 3, result.output
    assert "high-severity finding" in result.stderr
    assert [method for method, _ in recorder] == ["POST"]
    assert not (pki / facts.ROOT_KEY).exists()
    assert server_certs(sandbox)[0] == 206


# --- Audit: a root key the server chose, written where the audit does not look ----------------


def test_a_key_written_through_stderr_redirection_is_seen(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    """`{ printf KEY; } 2>factory_ca.key >&2` after the key generation: the audit recorded only
    fd 1 redirections as writes, so the file kept its 'generated' origin and the server's own
    key became the factory's root of trust, with no high finding."""
    key, lines = chosen_key_pem()
    scripts = api_scripts(sandbox)
    overwrite = f"\t{{ {printf_lines(lines)}; }} 2>factory_ca.key >&2\n"
    answer_with(monkeypatch, sandbox, with_line(scripts, "create_ca", "\tkey=factory_ca.key\n", overwrite))
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    refused_before_running(result, recorder, pki, sandbox, key)


def test_a_key_signed_with_after_cd_is_seen(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    """`(cd d && openssl req -key factory_ca.key ...)`: the audit did not follow `cd`, so it
    took d/factory_ca.key (the server's key, written as data) for the generated one in the work
    dir, and the server's key became the root of trust."""
    key, lines = chosen_key_pem()
    scripts = api_scripts(sandbox)
    sign = 'openssl req $extra -new -x509 -days 7300 -config ca.cnf -key "$key" -out factory_ca.pem -sha256\n'
    text = scripts["create_ca"].replace(sign, (
        f"mkdir d\n{{ {printf_lines(lines)}; }} > d/factory_ca.key\ncp ca.cnf d/ca.cnf\n"
        f"(cd d && {sign.strip()})\nmv -f d/factory_ca.key .\ncp d/factory_ca.pem .\n"
    ))
    assert text != scripts["create_ca"]
    answer_with(monkeypatch, sandbox, {"create_ca": text})
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    refused_before_running(result, recorder, pki, sandbox, key)


@pytest.mark.parametrize("spelling", ["d/./k", "d//k"])
def test_two_spellings_of_one_file_are_one_file(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path, spelling):
    """A key generated as d/k, overwritten with the server's key through `d/./k` (or `d//k`),
    then renamed factory_ca.key: the audit took the two spellings for two files."""
    key, lines = chosen_key_pem()
    scripts = api_scripts(sandbox)
    keygen = "\topenssl ecparam -genkey -name prime256v1 | openssl ec -out factory_ca.key\n"
    text = scripts["create_ca"].replace(keygen, (
        f"\tmkdir d\n\topenssl ecparam -genkey -name prime256v1 | openssl ec -out d/k\n"
        f"\t{{ {printf_lines(lines)}; }} > {spelling}\n\tmv d/k factory_ca.key\n"
    ))
    assert text != scripts["create_ca"]
    answer_with(monkeypatch, sandbox, {"create_ca": text})
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    refused_before_running(result, recorder, pki, sandbox, key)


KEYGEN = "\topenssl ecparam -genkey -name prime256v1 | openssl ec -out factory_ca.key\n"


@pytest.mark.parametrize("overwrite", [
    "cp -t. d/factory_ca.key",  # GNU getopt: -t's value attached
    "cp --target=. d/factory_ca.key",  # an abbreviated long option
    "mv -ft. d/factory_ca.key",  # in a cluster
    "cp d/* .",  # a glob: the names it writes are not known
    "cp -r d/. .",  # a folder's contents
    "sed -n '--expression=w factory_ca.key' d/k",  # sed's script in a long option
    "sed -new' 'factory_ca.key d/k",  # -n -e 'w factory_ca.key'
])  # fmt: skip
def test_options_are_read_as_gnu_getopt_reads_them(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path, overwrite):
    """The generated root key overwritten with the server's by cp, mv or sed options the
    audit read otherwise than the tools do (an attached value taken for a flag, the data file
    taken for sed's script): no high finding, and the server's key became the root."""
    key, lines = chosen_key_pem()
    scripts = api_scripts(sandbox)
    data = "d/k" if overwrite.startswith("sed") else "d/factory_ca.key"
    text = scripts["create_ca"].replace(KEYGEN, f"{KEYGEN}\tmkdir d\n\t{{ {printf_lines(lines)}; }} > {data}\n\t{overwrite}\n")
    assert text != scripts["create_ca"]
    answer_with(monkeypatch, sandbox, {"create_ca": text})
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    refused_before_running(result, recorder, pki, sandbox, key)


@pytest.mark.parametrize("overwrite", ["openssl pkey -in d/k -out=factory_ca.key", "openssl pkey -in d/k --out factory_ca.key"])
def test_openssl_options_are_read_as_openssl_reads_them(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path, overwrite):
    """openssl takes `--out F` and `-out=F` as `-out F`; the audit took them for flags and
    missed the write of the server's key over the generated one."""
    key, lines = chosen_key_pem()
    scripts = api_scripts(sandbox)
    text = scripts["create_ca"].replace(KEYGEN, f"{KEYGEN}\tmkdir d\n\t{{ {printf_lines(lines)}; }} > d/k\n\t{overwrite}\n")
    answer_with(monkeypatch, sandbox, {"create_ca": text})
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    refused_before_running(result, recorder, pki, sandbox, key)



# openssl loads a provider module named by the config `req -config` reads; this config names
# one (a shared object the script could have written with printf) in words the audit read
# otherwise than openssl: NCONF joins a line ending in a backslash with the next. (Tried by
# hand with a module whose constructor puts the server's key in factory_ca.key before openssl
# reads it: create exited 0 and the server's key became the root.)
HIDDEN_MODULE_CONFIG = """cat > pre.cnf <<'EOF'
openssl_\\
conf = init
[init]
provider\\
s = p
[p]
x = x_sect
default = d_sect
[d_sect]
activate = 1
[x_sect]
modul\\
e = \\
/work/e.so
activate = 1
EOF
cat ca.cnf >> pre.cnf
mv pre.cnf ca.cnf
"""


def test_an_openssl_config_is_read_as_openssl_reads_it(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    scripts = api_scripts(sandbox)
    text = scripts["create_ca"].replace('\nif [ -n "$HSM_MODULE" ]', "\n" + HIDDEN_MODULE_CONFIG + 'if [ -n "$HSM_MODULE" ]', 1)
    assert text != scripts["create_ca"]
    answer_with(monkeypatch, sandbox, {"create_ca": text})
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    assert result.exit_code == 3, result.output
    assert "eval-data" in result.stderr and "openssl_conf" in result.stderr
    assert [method for method, _ in recorder] == ["POST"]



def test_an_alias_ending_in_a_blank_expands_the_next_word(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    """`alias a='command '; alias b='...'; a b`: sh checks the word after such an alias for an
    alias too, so b's command ran; the audit saw only `command b`, an unknown program (medium)."""
    key, lines = chosen_key_pem()
    scripts = api_scripts(sandbox)
    hidden = "\talias a='command '\n\talias b='openssl pkey -in d/k -out factory_ca.key'\n\ta b\n"
    text = scripts["create_ca"].replace(KEYGEN, f"{KEYGEN}\tmkdir d\n\t{{ {printf_lines(lines)}; }} > d/k\n{hidden}")
    answer_with(monkeypatch, sandbox, {"create_ca": text})
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    refused_before_running(result, recorder, pki, sandbox, key)



# --- The upload check: a root of trust with a property the server chose ------------------------


def uploaded_after(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path, script: str, old: str, new: str,
                   args: tuple[str, ...] = ()):  # fmt: skip
    """create with `script`'s text changed (by default no --allow-unaudited: nothing here is high)."""
    text = api_scripts(sandbox)[script]
    assert old in text
    answer_with(monkeypatch, sandbox, {script: text.replace(old, new, 1)})
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", *args, env=sandbox_env)
    return result, [body for method, body in recorder if method == "PATCH"]


@pytest.mark.parametrize(("script", "old", "new", "message"), [
    # The root can be set only once: one that expires tomorrow is a factory lost.
    ("create_ca", "-days 7300", "-days 1", "notAfter"),
    ("create_device_ca", "openssl req -new -config ca.cnf", "openssl req -new -config ca.cnf", None),
    ("create_ca", "OU = acme\n", "OU = acme\nO = Escrow of the server\n", "subject is"),
    ("create_ca", "OU = acme\n", "OU = acme\nemailAddress = escrow@example.com\n", "subject is"),
    ("create_ca", "CN = Factory-CA\n", "CN = Factory-CA (escrowed)\n", "subject is"),
    ("create_ca", "prompt = no\n", "prompt = no\nstring_mask = MASK:0x800\n", "BMPString"),
    ("create_ca", "prompt = no\n", "prompt = no\nstring_mask = MASK:0x4\n", "T61String"),
    ("create_device_ca", "OU = acme\n", "OU = acme\nO = Escrow of the server\n", "subject is"),
])  # fmt: skip
def test_the_root_and_the_local_ca_are_what_fioca_names(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path,
                                                        script, old, new, message):  # fmt: skip
    """The text asks for them, the audit finds nothing high, and every check until the upload
    compared the certificates with that text: a root valid one day, or whose subject carries
    what the server chose (another attribute, another CN, a string type no maker writes)."""
    result, patches = uploaded_after(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path, script, old, new)
    if message is None:  # the twin: the text as the server sends it uploads
        assert result.exit_code == 0, result.output
        return
    assert patches == [], "uploaded"
    assert result.exit_code == 4, result.output
    [error] = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert message in error
    assert server_certs(sandbox)[0] == 206



def test_reissue_takes_no_date_the_script_chose(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    """--reissue renews serials and signatures, but kept the script's notBefore: a start the
    script picks anywhere in the upload check's 15 minutes carries some 10 bits past it (here
    the server's chosen second, 33), into the root of trust."""
    chosen = (datetime.now(timezone.utc) - timedelta(minutes=10)).replace(second=33, microsecond=0)
    end = chosen + timedelta(days=7300)
    own_ca = BACKDATED_ROOT.replace("20070301000000Z", chosen.strftime("%Y%m%d%H%M%SZ")).replace(
        "20270224000000Z", end.strftime("%Y%m%d%H%M%SZ"))
    sign = 'openssl req $extra -new -x509 -days 7300 -config ca.cnf -key "$key" -out factory_ca.pem -sha256'
    started = datetime.now(timezone.utc).replace(microsecond=0)
    result, patches = uploaded_after(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path, "create_ca", sign,
                                     own_ca, args=("--allow-unaudited", "--reissue"))
    assert result.exit_code == 0, result.output
    (body,) = patches
    root = x509.load_pem_x509_certificate(body["root-crt"].encode())
    assert root.not_valid_before_utc != chosen
    assert root.not_valid_before_utc >= started
    assert root.not_valid_after_utc - root.not_valid_before_utc == timedelta(days=7300)



def test_the_upload_is_canonical_pem_not_the_scripts_layout(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    """The strict PEM reader skips whitespace inside and around a block, and the upload was the
    script's bytes as printed: where it breaks lines and puts blanks is a channel of hundreds
    of bits (here a pattern the server chose) that no certificate check sees."""
    sign = "-extfile server.ext -CAkey \"$key\" -CA factory_ca.pem -sha256"
    result, patches = uploaded_after(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path, "sign_tls_csr", sign,
                                     sign + " | sed 's/^MII/MII /; s/=$/=\\t/'")
    assert result.exit_code == 0, result.output
    (body,) = patches
    for field in ("root-crt", "tls-crt", "ca-crt"):
        blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", body[field], re.S)
        canonical = [x509.load_pem_x509_certificate(block.encode()).public_bytes(serialization.Encoding.PEM).decode()
                     for block in blocks]  # fmt: skip
        assert body[field] == "\n".join(canonical), field



def _resigned(cert: x509.Certificate, key, change) -> x509.Certificate:
    """`cert` with its TBSCertificate's fields changed by `change` (a list of DER elements) and
    signed again by `key`: what a script holding the root key can make with openssl alone."""
    data = cert.public_bytes(serialization.Encoding.DER)
    _tag, outer, _end = der.read(data, 0)
    _tag, start, tbs_end = der.read(data, outer)
    fields = change([data[offset:stop] for _tag, offset, _content, stop in der.children(data, start, tbs_end)])
    tbs = der.tlv(0x30, b"".join(fields))
    algorithm = data[tbs_end : der.read(data, tbs_end)[2]]
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return x509.load_der_x509_certificate(der.tlv(0x30, tbs + algorithm + der.tlv(0x03, b"\x00" + signature)))


def _generalized_not_before(fields: list[bytes]) -> list[bytes]:
    """notBefore as GeneralizedTime (20YYMMDDHHMMSSZ) instead of the UTCTime RFC 5280 wants."""
    validity = fields[4]
    _tag, start, end = der.read(validity, 0)
    (_t, _o, content, stop), (_t2, offset, _c2, after) = der.children(validity, start, end)
    moved = der.tlv(0x30, der.tlv(0x18, b"20" + validity[content:stop]) + validity[offset:after])
    return [*fields[:4], moved, *fields[5:]]


@pytest.mark.parametrize(("change", "message"), [
    (lambda fields: fields, None),  # the twin: as made
    (lambda fields: [*fields[:-1], der.tlv(0x82, b"\x00" + b"chosen by the server " * 8), fields[-1]], "unique identifiers"),
    (lambda fields: [*fields[:-1], der.tlv(0x81, b"\x00" + b"x" * 40), fields[-1]], "unique identifiers"),
    (_generalized_not_before, "UTCTime"),
])  # fmt: skip
def test_the_upload_check_reads_the_der_fields(change, message):
    """A root re-signed with a subjectUniqueID (any number of bits nothing reads), or a date in
    the other time encoding (a bit each): everything else about it is as made."""
    key = ec.generate_private_key(ec.SECP256R1())
    root = _resigned(profiles.build_root(key, factory=FACTORY), key, change)
    report = audit_scripts(reference.bundled(), hsm=False, known={}, jail="test")
    asked = with_environment(report.script(facts.CREATE_CA).asked[0], {"FACTORY": FACTORY})

    def check():
        profiles.check_upload(root, role=profiles.Role.ROOT, factory=FACTORY, asked=asked, key=key,
                              artifact=facts.ROOT_CERT, openssl=3)  # fmt: skip

    if message is None:
        check()
        return
    with pytest.raises(CheckError, match=message):
        check()



# --- The work dir: nothing of it outlives the run -------------------------------------------------


def test_a_key_copy_in_a_mode_0_folder_goes_with_the_work_dir(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """`mkdir d; cp factory_ca.key d/; chmod 0 d`: rmtree could not list d, so the copy of the
    root key outlived the run and the run failed. Root passes any mode, so as root this shows
    only that the trick reaches the disk; the proof is the removal tests in test_runner.py."""
    from fioca.pki import files

    seen: dict[str, int] = {}
    real = files._opened_up

    def spy(parent_fd, name):
        seen[name] = stat.S_IMODE(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
        return real(parent_fd, name)

    monkeypatch.setattr(files, "_opened_up", spy)
    text = api_scripts(sandbox)["create_ca"]
    assert KEYGEN in text
    answer_with(monkeypatch, sandbox, {"create_ca": text.replace(KEYGEN, f"{KEYGEN}\tmkdir d\n\tcp factory_ca.key d/\n\tchmod 0 d\n")})
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", "--allow-unaudited", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert seen.get("d") == 0  # the script's folder, as it left it
    assert not (pki / facts.WORK_DIR).exists()
    key = (pki / facts.ROOT_KEY).read_bytes()
    copies = [path for path in pki.rglob("*") if path.is_file() and path.read_bytes() == key]
    assert copies == [pki / facts.ROOT_KEY]


def test_a_key_copy_at_the_bottom_of_a_deep_tree_goes_with_the_work_dir(cli, sandbox, sandbox_env, monkeypatch, tmp_path,
                                                                        request):
    """1,500 nested folders (past Python's recursion limit) with the key at the bottom: the
    recursive removal failed there and the copy outlived the run."""
    request.addfinalizer(lambda: subprocess.run(["rm", "-rf", str(tmp_path / "pki")], check=False))  # pytest's rmtree would recurse
    deep = 'top=$(pwd); i=0; while [ $i -lt 1500 ]; do mkdir d; cd d; i=$((i+1)); done; cp "$top/factory_ca.key" .; cd "$top"\n'
    text = api_scripts(sandbox)["create_ca"]
    answer_with(monkeypatch, sandbox, {"create_ca": text.replace(KEYGEN, f"{KEYGEN}\t{deep}")})
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", "--allow-unaudited", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert not (pki / facts.WORK_DIR).exists()
    key = (pki / facts.ROOT_KEY).read_bytes()
    copies = [path for path in pki.rglob("*") if path.is_file() and path.read_bytes() == key]
    assert copies == [pki / facts.ROOT_KEY]


# --- HSM mode: the jail holds the token store, read-write, and the PIN -----------------------

TOKEN_DIR_OF_CONF = "tokens=$(sed -n 's/^directories.tokendir *= *//p' \"$SOFTHSM2_CONF\")\n"


def _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, added: str, *, script: str = "create_ca",
                before: str = "rm ca.cnf", args: tuple[str, ...] = ("--allow-unaudited",),
                prepare=None) -> tuple[Token, Token, object]:  # fmt: skip
    """create in HSM mode, fioca's own `script` with `added` before `before`; beside the
    factory's token, the store holds another (another factory's root, say). `prepare(token)`
    puts on the factory's token what the user keeps there."""
    ours = new_token(tmp_path / "hsm", "factory-root")
    if prepare is not None:
        prepare(ours)
    other = "other-factory"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", other, "--so-pin", SO_PIN, "--pin", PIN],
                   env={**os.environ, **ours.env}, check=True, capture_output=True)  # fmt: skip
    text = reference.bundled()[script]
    assert before in text
    answer_with(monkeypatch, sandbox, {**reference.bundled(), script: text.replace(before, added + before, 1)})
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", *args, *ours.flags(),
                 env={**sandbox_env, **ours.env, "FIOCA_HSM_PIN": PIN})  # fmt: skip
    return ours, Token(ours.conf, other), result


def _pin_as_hex() -> str:
    """sh that spells $HSM_PIN in hex into $s, one `case` a character: no command sees the PIN."""
    table = " ".join(f"{c}) h={ord(c):02x};;" for c in string.ascii_letters + string.digits + "-_.")
    return ('p=$HSM_PIN; s=\nwhile [ -n "$p" ]; do r=${p#?}\n'
            f'case "${{p%"$r"}}" in {table} *) h=3f;; esac\ns=$s$h; p=$r; done\n')  # fmt: skip


def test_hsm_pin_does_not_ride_out_in_a_serial(cli, sandbox, sandbox_env, recorder, monkeypatch, tmp_path):
    """`openssl x509 -CAcreateserial` takes the serial from factory_ca.srl when it is there: a
    sign_tls_csr that wrote its own (the PIN in hex, spelt by `case`) uploaded the HSM PIN in
    the gateway certificate's serial, with no high finding."""
    _ours, _other, result = _hsm_create(
        cli, sandbox, sandbox_env, monkeypatch, tmp_path, _pin_as_hex() + 'echo "$s" > factory_ca.srl\n',
        script="sign_tls_csr", before="cat > server.ext", args=())
    for _method, body in recorder:
        tls = body.get("tls-crt") if isinstance(body, dict) else None
        if tls:
            serial = x509.load_pem_x509_certificate(tls.encode()).serial_number - 1
            assert serial.to_bytes((serial.bit_length() + 7) // 8, "big") != PIN.encode(), "the PIN was uploaded"
    assert result.exit_code == 3, result.output
    assert "chosen-serial" in result.stderr


def _token_labels(token: Token) -> list[str]:
    shown = subprocess.run(["softhsm2-util", "--show-slots"], env={**os.environ, **token.env}, capture_output=True, text=True)
    return re.findall(r"Label:\s+(\S+)", shown.stdout)


def _pin_in(store: Path) -> list[Path]:
    return [path for path in store.rglob("*") if path.is_file() and PIN.encode() in path.read_bytes()]


def _object_kinds(token: Token) -> list[str]:
    shown = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", token.label, "--login", "--pin", PIN,
                            "--list-objects"], env={**os.environ, **token.env}, capture_output=True, text=True)  # fmt: skip
    return re.findall(r"^(\w+ \w+ Object|Data object \d+)", shown.stdout, re.MULTILINE)


@pytest.mark.parametrize("left", [
    'for t in "$tokens"/*; do echo "$HSM_PIN" > "$t/notes"; done\n',
    'for t in "$tokens"/*; do echo "$HSM_PIN" > "$t/token.lock"; done\n',
    'for t in "$tokens"/*; do mkdir "$t/d"; echo "$HSM_PIN" > "$t/d/x"; chmod 0 "$t/d"; done\n',
], ids=["a file", "in a lock file", "in a mode-0 folder"])  # fmt: skip
def test_hsm_mode_leaves_no_pin_in_the_token_store(cli, sandbox, sandbox_env, monkeypatch, tmp_path, left):
    """In HSM mode a script holds the PIN and its token's folder read-write: the PIN written
    there outlived the run, beside the key it unlocks."""
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, TOKEN_DIR_OF_CONF + left)
    assert result.exit_code != 0, result.output
    assert "left on the HSM token what fioca never makes there" in result.stderr
    assert _pin_in(ours.conf.parent / "tokens") == []
    assert "left on the HSM token" in result.stderr.strip().splitlines()[-1]  # one line, the last


def test_hsm_mode_leaves_no_pin_in_a_token_object(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """The same PIN kept on the token itself, as a public data object anyone can read."""
    store = 'printf %s "$HSM_PIN" > pin.txt\npkcs11-tool --module "$HSM_MODULE" --token-label "$HSM_TOKEN_LABEL" --login --pin env:HSM_PIN --write-object pin.txt --type data --label notes >/dev/null\n'
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, store)
    assert result.exit_code != 0, result.output
    assert "data 'notes'" in result.stderr
    assert not any(kind.startswith("Data object") for kind in _object_kinds(ours)), _object_kinds(ours)


def test_hsm_mode_shows_a_script_no_other_token(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """The whole token store was bound read-write: a script could read every other token of the
    user (with the PIN it has, when they share it) and delete them, another factory's root too."""
    ours, other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path,
                                      TOKEN_DIR_OF_CONF + 'ls_all=$(echo "$tokens"/*)\nrm -rf $ls_all\n')
    assert other.label in _token_labels(ours)


P11 = 'pkcs11-tool --module "$HSM_MODULE" --token-label "$HSM_TOKEN_LABEL" --login --pin env:HSM_PIN'


@pytest.mark.parametrize("left", [
    'for t in "$tokens"/*; do echo "$HSM_PIN" > "$t/01234567-89ab-cdef-0123-456789abcdef.object"; done\n',
    'for t in "$tokens"/*; do echo "$HSM_PIN" >> "$t/generation"; done\n',
    'for t in "$tokens"/*; do printf %.8s "$HSM_PIN" > "$t/generation"; done\n',
], ids=["in a file named like an object", "after the generation count", "as the generation count"])  # fmt: skip
def test_hsm_mode_leaves_no_pin_in_a_softhsm2_name(cli, sandbox, sandbox_env, monkeypatch, tmp_path, left):
    """A file named as SoftHSM2 names its own: a `<uuid>.object` the token does not show was
    counted and the run refused, but the file (the PIN in it) was kept beside the key; the
    PIN after the 8 bytes of `generation`, or as those 8 bytes (all of an 8-character PIN),
    passed unseen and the run went on."""
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, TOKEN_DIR_OF_CONF + left)
    assert result.exit_code != 0, result.output
    assert _pin_in(ours.conf.parent / "tokens") == []
    files = [path.read_bytes() for path in (ours.conf.parent / "tokens").rglob("*") if path.is_file()]
    assert not any(PIN[:8].encode() in data for data in files)
    assert "HSM token" in result.stderr.strip().splitlines()[-1]  # one line, the last

def test_hsm_mode_leaves_no_pin_in_a_lock_files_name(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """An empty `<uuid>.lock`, its UUID the PIN in hex: a lock file SoftHSM2 would make, so it
    was kept, the PIN in its name beside the key. SoftHSM2 makes a lock file with its object
    file and removes the two together: one with no object file is a stray."""
    name = (_pin_as_hex() + 'n=$(echo "${s}0000000000000000" | '
            "sed 's/^\\(.\\{8\\}\\)\\(.\\{4\\}\\)\\(.\\{4\\}\\)\\(.\\{4\\}\\)\\(.\\{12\\}\\).*/\\1-\\2-\\3-\\4-\\5/')\n")
    left = TOKEN_DIR_OF_CONF + name + 'for t in "$tokens"/*; do : > "$t/$n.lock"; done\n'
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, left)
    assert result.exit_code != 0, result.output
    assert "left on the HSM token" in result.stderr.strip().splitlines()[-1]
    pin = PIN.encode().hex()
    assert not [path for path in (ours.conf.parent / "tokens").rglob("*") if pin[:8] in path.name]

def test_hsm_mode_leaves_no_pin_in_an_object_files_name(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """The root-ca public key's object file (and its lock) renamed to a UUID that is the PIN
    in hex (`mv`): SoftHSM2 finds its objects by listing the folder, so the token still
    showed its key pair, one new file for each, and the run ended well with the PIN in a file
    name beside the key. New object files now get names fioca draws."""
    name = (_pin_as_hex() + 'n=$(echo "${s}0000000000000000" | '
            "sed 's/^\\(.\\{8\\}\\)\\(.\\{4\\}\\)\\(.\\{4\\}\\)\\(.\\{4\\}\\)\\(.\\{12\\}\\).*/\\1-\\2-\\3-\\4-\\5/')\n")
    move = ('for t in "$tokens"/*; do f=$(grep -l root-ca "$t"/*.object | head -n 1)\n'
            'mv "$f" "$t/$n.object"; mv "${f%.object}.lock" "$t/$n.lock"; done\n')
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, TOKEN_DIR_OF_CONF + name + move)
    pin = PIN.encode().hex()
    assert not [path for path in (ours.conf.parent / "tokens").rglob("*") if pin[:8] in path.name]
    assert result.exit_code == 0, result.output  # the key pair is the script's to make: only its names change
    assert sorted(_object_kinds(ours)) == ["Private Key Object", "Public Key Object"], _object_kinds(ours)


def test_hsm_mode_leaves_no_pin_in_the_root_keys_id(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """The root-ca public key's CKA_ID set to the PIN (`--set-id`): a root-ca key was all the
    watch asked of a new object, whatever its id, so the run went on and the PIN stayed on
    the token, in the public key anyone reads without logging in."""
    set_id = _pin_as_hex() + P11 + ' --type pubkey --id 01 --set-id "$s" >/dev/null\n'
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, set_id)
    assert result.exit_code != 0, result.output
    assert _pin_in(ours.conf.parent / "tokens") == []


def test_hsm_mode_a_label_that_is_not_utf8_is_removed_in_one_line(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """A data object holding the PIN, labelled with a byte that is not UTF-8: python-pkcs11
    decodes labels as UTF-8, so the watch died with a UnicodeDecodeError traceback and the
    object (the PIN in it) stayed on the token."""
    store = f'printf %s "$HSM_PIN" > pin.txt\n{P11} --write-object pin.txt --type data --label "$(printf \'n\\377\')" >/dev/null\n'
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, store)
    assert result.exit_code != 0, result.output
    assert "left on the HSM token" in result.stderr.strip().splitlines()[-1]
    assert not any(kind.startswith("Data object") for kind in _object_kinds(ours)), _object_kinds(ours)
    assert _pin_in(ours.conf.parent / "tokens") == []


@pytest.mark.parametrize("kind", ["cert", "data"])
def test_hsm_mode_an_object_labelled_root_ca_of_another_class_is_removed(cli, sandbox, sandbox_env, monkeypatch, tmp_path,
                                                                         kind):
    """A certificate or data object labelled root-ca (the PIN inside): not a key, so removed."""
    obj = "factory_ca.pem" if kind == "cert" else "pin.txt"
    store = f'printf %s "$HSM_PIN" > pin.txt\n{P11} --write-object {obj} --type {kind} --label root-ca >/dev/null\n'
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, store)
    assert result.exit_code != 0, result.output
    assert "left on the HSM token" in result.stderr.strip().splitlines()[-1]
    assert sorted(_object_kinds(ours)) == ["Private Key Object", "Public Key Object"], _object_kinds(ours)

def test_hsm_mode_a_changed_pin_leaves_no_pin_readable_on_the_token(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """The script keeps a PIN of its choosing in a public data object and sets it as the
    token's PIN: the watch could no longer log in and said 'wrong PIN; nothing was changed',
    and the object (the PIN that now unlocks the key, readable with no PIN) stayed."""
    new = "new-Pin-2xQ"
    store = (f'printf %s "{new}" > pin.txt\n{P11} --write-object pin.txt --type data --label notes >/dev/null\n'
             f'{P11} --change-pin --new-pin {new} >/dev/null\n')
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, store)
    assert result.exit_code != 0, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "changed the PIN of HSM token" in last and "data 'notes'" in last, last
    public = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", ours.label, "--list-objects"],
                            env={**os.environ, **ours.env}, capture_output=True, text=True)  # fmt: skip
    assert "notes" not in public.stdout, public.stdout
    assert new.encode() not in b"".join(path.read_bytes() for path in (ours.conf.parent / "tokens").rglob("*") if path.is_file())

PIN_POINT = (_pin_as_hex() + 'while [ ${#s} -lt 64 ]; do s=0$s; done\n'
             'printf "asn1=SEQUENCE:ec\\n[ec]\\nv=INTEGER:1\\nk=FORMAT:HEX,OCTETSTRING:%s\\np=EXPLICIT:0,OID:prime256v1\\n" "$s" > k.cnf\n'
             'openssl asn1parse -genconf k.cnf -noout -out k.der\n'
             'openssl ec -inform DER -in k.der -pubout -outform DER -out pub.der 2>/dev/null\n')  # fmt: skip
PUT_PIN_POINT = P11 + " --write-object pub.der --type pubkey --label root-ca --id 01 >/dev/null\n"


def _pin_point_in(token: Token) -> bool:
    """Whether the public point PIN_POINT makes (sh that makes pub.der, the P-256 public key whose
    private scalar is the PIN: anyone reads it on the token, and finds a short PIN from it by
    trying them all) is in the token's files."""
    point = ec.derive_private_key(int.from_bytes(PIN.encode(), "big"), ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return any(point in path.read_bytes() for path in (token.conf.parent / "tokens").rglob("*") if path.is_file())


@pytest.mark.parametrize("how", ["added", "in place of the root's"])
def test_hsm_mode_a_second_root_ca_key_does_not_stay(cli, sandbox, sandbox_env, monkeypatch, tmp_path, how):
    """A later script adds a second root-ca public key, id 01, whose private scalar is the PIN:
    a kind the token held before (the root's own public key), so the watch let it through, and
    the run ended well with the PIN's public point on the token for anyone to read. Put in
    place of the root's own one (deleted first), nothing even looked new."""
    delete = P11 + " --delete-object --type pubkey --label root-ca >/dev/null\n" if how != "added" else ""
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, PIN_POINT + delete + PUT_PIN_POINT,
                                       script="sign_tls_csr", before="cat > server.ext")  # fmt: skip
    assert not _pin_point_in(ours)
    assert result.exit_code != 0, result.output
    assert "left on the HSM token" in result.stderr.strip().splitlines()[-1]
    if how == "added":
        assert sorted(_object_kinds(ours)) == ["Private Key Object", "Public Key Object"], _object_kinds(ours)

def test_hsm_mode_an_undestroyable_object_does_not_stay(tmp_path):
    """A data object holding the PIN, CKA_DESTROYABLE false (C_CreateObject from a program the
    script wrote; this pkcs11-tool's --undestroyable sets nothing): the watch's C_DestroyObject
    was refused, its error said 'nothing was changed', and the object stayed on the token,
    readable without the PIN. (The test makes the object in the script's stead.)"""
    import pkcs11

    token = new_token(tmp_path / "hsm", "factory-root")
    folder = next((tmp_path / "hsm" / "tokens").iterdir())
    settings = token.settings()
    watch = token_watch.TokenWatch(settings, str(folder))
    with hsm.session(settings, rw=True) as sess:
        sess.create_object({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.DATA, pkcs11.Attribute.TOKEN: True,
                            pkcs11.Attribute.LABEL: "notes", pkcs11.Attribute.VALUE: PIN.encode(),
                            pkcs11.Attribute.DESTROYABLE: False})  # fmt: skip
    with pytest.raises(ScriptError, match="data 'notes'"):
        watch.check("create_ca")
    assert _pin_in(tmp_path / "hsm" / "tokens") == []

def test_hsm_mode_a_flood_of_object_files_goes_without_the_module(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """A data object holding the PIN, its file copied 1,500 times under new names: each copy
    is an object SoftHSM2 shows, and each C_DestroyObject rescans the folder, so the watch
    took minutes (5,000 copies, made in seconds: two; 100,000: hours, 430 MB a listing), the
    PIN on disk while it ran and after a Ctrl-C. More new object files than a script makes go
    as files, before the module is asked."""
    flood = (f'printf %s "$HSM_PIN" > pin.txt\n{P11} --write-object pin.txt --type data --label notes >/dev/null\n'
             + TOKEN_DIR_OF_CONF + 'for t in "$tokens"/*; do f=$(grep -l "$HSM_PIN" "$t"/*.object); i=0\n'
             'while [ $i -lt 1500 ]; do cat "$f" > "$t/$(printf %08x-0000-4000-8000-%012x $i $i).object"; i=$((i+1)); done; done\n')  # fmt: skip
    listed = []
    real = token_watch.token_objects

    def spy(settings, **options):
        found = real(settings, **options)
        listed.append(sum(found.values()))
        return found

    monkeypatch.setattr(token_watch, "token_objects", spy)
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, flood)
    assert result.exit_code != 0, result.output
    assert "left on the HSM token" in result.stderr.strip().splitlines()[-1]
    assert _pin_in(ours.conf.parent / "tokens") == []
    assert max(listed) < 100, listed  # the module never loaded the flood


def test_hsm_mode_a_second_object_like_one_the_token_held_does_not_stay(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """The token holds the user's own data object 'notes'; a script adds a second 'notes', the
    PIN in it: which of two alike is new could not be told, so it stayed (the run refused)."""
    mine = tmp_path / "mine.txt"
    mine.write_text("the user's own notes\n")

    def prepare(token: Token) -> None:
        subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", token.label, "--login", "--pin", PIN,
                        "--write-object", mine, "--type", "data", "--label", "notes"],
                       env={**os.environ, **token.env}, check=True, capture_output=True)  # fmt: skip

    store = f'printf %s "$HSM_PIN" > pin.txt\n{P11} --write-object pin.txt --type data --label notes >/dev/null\n'
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, store, prepare=prepare)
    assert result.exit_code != 0, result.output
    assert "data 'notes'" in result.stderr.strip().splitlines()[-1]
    assert _pin_in(ours.conf.parent / "tokens") == []
    assert _object_kinds(ours).count("Data object 1") + _object_kinds(ours).count("Data object 2") <= 1

def test_hsm_mode_a_jail_that_would_not_end_leaves_no_pin_in_the_token_store(cli, sandbox, sandbox_env, monkeypatch,
                                                                             tmp_path):
    """A jail whose processes outlast the kernel's ten seconds to kill them (stuck in a sync of
    a flood of writes, say) stopped the run before the token watch: the PIN the script wrote
    beside the key stayed. The watch runs however the script ended."""
    from fioca.pki import jail

    monkeypatch.setattr(jail.Invocation, "wait_ended", lambda self, timeout=0: False)
    left = TOKEN_DIR_OF_CONF + 'for t in "$tokens"/*; do echo "$HSM_PIN" > "$t/notes"; done\n'
    ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, left)
    assert result.exit_code != 0, result.output
    assert "could not end" in result.stderr.strip().splitlines()[-1]
    assert _pin_in(ours.conf.parent / "tokens") == []

def test_hsm_mode_a_token_folder_chmodded_0_is_watched_all_the_same(tmp_path):
    """`chmod 0` on the token's own folder (the script's, read-write in the jail) with the PIN
    in a file there: the watch could not list it and died with an internal error
    (PermissionError), the file kept. Run where modes bind (root passes any)."""
    from tests.test_runner import as_a_user

    token = new_token(tmp_path / "hsm", "factory-root")
    folder = next((tmp_path / "hsm" / "tokens").iterdir())
    mode = stat.S_IMODE(folder.stat().st_mode)
    code = ("import os, sys\nfrom fioca.errors import ScriptError\nfrom fioca.pki import hsm, token_watch\n"
            f"settings = hsm.HsmSettings({MODULE!r}, {token.label!r}, {PIN!r}, {tuple(token.env.items())!r})\n"
            "watch = token_watch.TokenWatch(settings, sys.argv[1])\n"
            "open(os.path.join(sys.argv[1], 'notes'), 'w').write(settings.pin)\nos.chmod(sys.argv[1], 0)\n"
            "try:\n    watch.check('create_ca')\nexcept ScriptError as error:\n    print(error.message)\n")  # fmt: skip
    done = as_a_user(code, folder)
    assert done.returncode == 0, done.stderr
    assert "left on the HSM token what fioca never makes there (notes)" in done.stdout, done.stdout
    assert stat.S_IMODE(folder.stat().st_mode) == mode
    assert _pin_in(tmp_path / "hsm" / "tokens") == []

@pytest.mark.parametrize("where", ["a file", "a label"])
def test_hsm_mode_a_name_with_a_newline_does_not_forge_a_line(cli, sandbox, sandbox_env, monkeypatch, tmp_path, where):
    """A stray file or an object label with a newline in it, named in the watch's message: the
    one-line error went on over a second line the script wrote ('Done: ...')."""
    name = '"$(printf "n\\nDone: the PKI is ready")"'
    if where == "a file":
        left = TOKEN_DIR_OF_CONF + f'for t in "$tokens"/*; do echo "$HSM_PIN" > "$t/"{name}; done\n'
    else:
        left = f'printf %s "$HSM_PIN" > pin.txt\n{P11} --write-object pin.txt --type data --label {name} >/dev/null\n'
    _ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, left)
    assert result.exit_code != 0, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "left on the HSM token" in last and "Done: the PKI is ready" in last, result.stderr[-300:]  # one line

def test_hsm_mode_a_softhsm2_db_token_keeps_its_database(tmp_path, monkeypatch):
    """SoftHSM2 built with its database back end (objectstore.backend = db) keeps a token's
    every object in the folder's sqlite3.db: the watch took it for a stray and removed it,
    the root key with it, after every script of a faithful run. (This SoftHSM2 has no db back
    end: the module's own answers are stood in for.)"""
    from collections import Counter

    from fioca.pki import hsm, jail
    from fioca.pki.scripts import ScriptRunner

    tokens = tmp_path / "tokens"
    folder = tokens / "0b7be69b-5f8d-cd72-55c0-88394c015c46"
    folder.mkdir(parents=True)
    (folder / "sqlite3.db").write_bytes(b"SQLite format 3\0")
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = db\n")
    monkeypatch.setattr(hsm, "token_serial", lambda module, label, env: "88394c015c46")
    monkeypatch.setattr(token_watch, "token_objects", lambda settings, login=True: Counter())
    jail._hsm_files.cache_clear()
    env = {**hsm.HsmSettings(MODULE, "factory-root", PIN, (("SOFTHSM2_CONF", str(conf)),)).script_env()}
    (tmp_path / "work").mkdir(mode=0o700)
    runner = ScriptRunner(tmp_path / "work", jail=jail.NO_JAIL, env_extra=env)
    try:
        watch = runner._token_watch()
        (folder / "notes").write_text(PIN)
        with pytest.raises(ScriptError, match=r"\(notes\)"):
            watch.check("create_ca")
    finally:
        jail._hsm_files.cache_clear()
    assert sorted(path.name for path in folder.iterdir()) == ["sqlite3.db"]

def test_hsm_mode_a_token_the_script_broke_is_named_as_its_doing(cli, sandbox, sandbox_env, monkeypatch, tmp_path):
    """The script appends to token.object (the PIN, say: the README's limit, bytes inside
    SoftHSM2's own files): SoftHSM2 no longer loads the token, and the watch's error told the
    user to check --hsm-token-label, not that the script broke the token."""
    left = TOKEN_DIR_OF_CONF + 'for t in "$tokens"/*; do printf %s "$HSM_PIN" >> "$t/token.object"; done\n'
    _ours, _other, result = _hsm_create(cli, sandbox, sandbox_env, monkeypatch, tmp_path, left)
    assert result.exit_code != 0, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "script create_ca left the HSM token unusable" in last, last


# --- The same holes at the audit's level, each with its harmless twin ---------------------------

KNOWN = reference.known_sets(factory=FACTORY, local_ca_cn="fio-abc")


def high_findings(body: str, name: str = "create_ca") -> set[str]:
    report = audit_scripts({name: "#!/bin/sh -e\n" + body}, hsm=False, known=KNOWN, jail="test")
    return {finding.id for finding in report.scripts[0].findings if finding.severity == Severity.HIGH}


SIGN = "openssl req -new -x509 -days 7300 -config c.cnf -key factory_ca.key -out factory_ca.pem\n"
AUDIT_TWINS = [
    # (hostile, harmless, the HIGH finding of the first)
    ("openssl genpkey -algorithm EC -pkeyopt group:P-256 -pkeyopt hexdhkem-ikm:00ff -out factory_ca.key\n" + SIGN,
     "openssl genpkey -algorithm EC -pkeyopt group:P-256 -out factory_ca.key\n" + SIGN, "key-from-data"),
    ("openssl ecparam -genkey -name prime256v1 -out factory_ca.key\nexec 3>factory_ca.key\n" + SIGN,
     "openssl ecparam -genkey -name prime256v1 -out factory_ca.key\nexec 3>/dev/null\n" + SIGN, "key-from-data"),
    ("mkdir d\ncd d\n", "mkdir d\ncd .\n", "unresolved-path"),
    ("cp --parents d/x .\n", "cp -f d/x .\n", "unresolved-value"),
    ("echo 'openssl_c\\0157nf = init' > c.cnf\nopenssl req -new -config c.cnf -key k -out x.csr\n",
     "echo 'openssl_c0157nf = init' > c.cnf\nopenssl req -new -config c.cnf -key k -out x.csr\n", "eval-data"),
    ("printf '[a]\\nx = \\\\/etc/passwd\\n' > c.cnf\nopenssl req -new -config c.cnf -key k -out x.csr\n",
     "printf '[a]\\nx = etc/passwd\\n' > c.cnf\nopenssl req -new -config c.cnf -key k -out x.csr\n", "absolute-path"),
    ("alias a='command '\nalias b='cat /proc/1/environ'\na b\n", "alias a='command'\nalias b='cat /proc/1/environ'\na b\n",
     "reads-environment"),
    ('case "$HSM_PIN" in a*) x=1;; esac\n', '[ -n "$HSM_PIN" ] && x=1\n', "reads-secret-env"),
    ('[ "$HSM_PIN" = abc ] && x=1\n', '[ -z "$HSM_PIN" ] && x=1\n', "reads-secret-env"),
    ("x=${#HSM_PIN}\n", "x=${#HSM_MODULE}\n", "reads-secret-env"),
    ("echo 0A > factory_ca.srl\nopenssl x509 -req -in c.csr -CA factory_ca.pem -CAkey factory_ca.key -CAcreateserial -out x\n",
     "openssl x509 -req -in c.csr -CA factory_ca.pem -CAkey factory_ca.key -CAcreateserial -out x\n", "chosen-serial"),
    ("X=$(cat f)\nopenssl pkey -in k.pem -out$X\n", "openssl pkey -in k.pem -out x.pem\n", "unresolved-value"),
]  # fmt: skip

def test_an_audit_finding_is_one_line_whatever_the_script_spelt():
    """A path the audit resolves from `printf 'n\\nDone: ...'`, named in a finding: the refusal's
    detail lines (and --allow-unaudited's notes) went on over a line the script wrote."""
    body = TOKEN_DIR_OF_CONF + 'echo x > "$tokens/$(printf "n\\nDone: the PKI is ready")"\n'
    report = audit_scripts({"create_ca": "#!/bin/sh -e\n" + body}, hsm=False, known=KNOWN, jail="test")
    messages = [finding.message for finding in report.scripts[0].findings]
    assert any("Done: the PKI is ready" in message for message in messages), messages
    assert not any("\n" in message for message in messages), messages


@pytest.mark.parametrize(("hostile", "harmless", "finding"), AUDIT_TWINS)
def test_audit_twins(hostile: str, harmless: str, finding: str) -> None:
    assert finding in high_findings(hostile)
    assert finding not in high_findings(harmless)

