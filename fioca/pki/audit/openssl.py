"""openssl and pkcs11-tool, read for what decides the certificates.

For each openssl command: its options (which files it reads and writes, which keys it signs
with and how they were made), the key it generates, the validity, the digest, and the config
or extension file the script's here-documents wrote. Every certificate-making command
(`req -x509`, `x509 -req`, `ca`) is described as a `fioca.pki.asked.AskedCertificate`, so that
`create` can compare what it got with what the text asked for.

Key material must come from a key-generation command (`ecparam -genkey`, `genpkey`, `genrsa`,
`req -newkey`, `pkcs11-tool --keypairgen`); a key written as text, read from data or derived
from it, a serial or key identifier the script chooses, can carry data out in the upload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fioca import facts
from fioca.pki.asked import AskedCertificate, AskedExtension
from fioca.pki.audit import knowledge, paths
from fioca.pki.audit.expand import read_env
from fioca.pki.audit.report import Severity
from fioca.pki.audit.state import Field, FileInfo, Invocation, Output, Value


@dataclass(eq=False)
class Options:
    """One openssl command line read: its subcommand, options with values, flags, operands."""

    sub: str
    values: dict[str, list[Field]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    positional: list[Field] = field(default_factory=list)

    def get(self, name: str) -> Field | None:
        return self.values[name][-1] if name in self.values else None

    def text(self, name: str) -> str | None:
        found = self.get(name)
        return found.text if found is not None else None


def parse_options(inv: Invocation) -> Options | None:
    if len(inv.args) < 1:
        return None
    head = inv.args[0]
    if not head.value.known:
        inv.find("unresolved-value", Severity.HIGH, f"openssl {head.text}: a subcommand chosen at run time")
        return None
    options = Options(head.text)
    takes_value = knowledge.OPENSSL_VALUE_OPTIONS | knowledge.OPENSSL_SUB_VALUE_OPTIONS.get(head.text, set())
    args = inv.args[1:]
    i = 0
    while i < len(args):
        f = args[i]
        if not f.value.known and f.value.lead is not None and f.value.lead.kind not in ("arg",):
            if not f.quoted:
                inv.find("unresolved-value", Severity.HIGH, f"openssl {options.sub} takes {f.text}, options built at run time")
            options.positional.append(f)
        elif f.text.startswith("-") and f.text != "-":
            # openssl reads `--name` as `-name`, and `-name=value` as `-name value`.
            if not f.value.known:
                inv.find("unresolved-value", Severity.HIGH, f"openssl {options.sub} {f.text}: an option built at run time")
            first = f.value.parts[0] if isinstance(f.value.parts[0], str) else ""
            name, eq, attached = first[2:].partition("=") if first.startswith("--") else first[1:].partition("=")
            if eq:
                value = Value((attached, *f.value.parts[1:]) if attached else f.value.parts[1:], f.value.taints, f.value.computed)
                options.values.setdefault(name, []).append(Field(value, False, f.quoted, f.line))
                if name not in takes_value:
                    inv.find("unresolved-value", Severity.HIGH, f"openssl {options.sub} {f.text}: a value given to an option the audit does not know to take one")
                i += 1
                continue
            if name in takes_value and i + 1 < len(args):
                options.values.setdefault(name, []).append(args[i + 1])
                i += 2
                continue
            options.flags.append(name)
        else:
            options.positional.append(f)
        i += 1
    return options


def openssl(inv: Invocation) -> Output:
    options = parse_options(inv)
    if options is None:
        return Output()
    inv.command.subcommand = options.sub
    sub = options.sub
    if sub in knowledge.OPENSSL_NETWORK or options.get("connect") or options.get("url") or options.get("proxy"):
        inv.find("network-access", Severity.HIGH, f"openssl {sub} talks to the network")
    if sub in knowledge.OPENSSL_DECODERS and "d" in options.flags:
        inv.find("decodes-data", Severity.MEDIUM, f"openssl {sub} -d decodes data hidden in the script")
    _loaders(inv, options)
    _key_kind(inv, options)
    _validity(inv, options)
    _digest(inv, options)
    _serial(inv, options)
    config = _config(inv, options.get("config"))
    extfile = _config(inv, options.get("extfile"))
    signing_key = _signing_keys(inv, options)
    _reads(inv, options)
    _signer(inv, options)
    if sub == "req":
        subject = _subject(options, config)
        inv.command.subject = ", ".join(f"{k}={v}" for k, v in subject) if subject else None
    asked = _asked(inv, options, config, extfile)
    if asked is not None:
        inv.state.world.asked.append(asked)
        _check_asked(inv, asked)
    return _products(inv, options, signing_key)


# --- files and keys ----------------------------------------------------------------------------


def _token_key(options: Options, name: str, f: Field) -> bool:
    """A key on the PKCS#11 token (a pkcs11: URI, or -keyform engine), not a file."""
    form = options.text("CAkeyform" if name == "CAkey" else "keyform")
    return f.value.prefix.startswith("pkcs11:") or form == "engine"


def _signing_keys(inv: Invocation, options: Options) -> FileInfo | None:
    """-key, -signkey, -CAkey: the proper readers of a private key; each key must have been
    generated (or be the root, for -CAkey)."""
    state = inv.state
    found = None
    for name in sorted(knowledge.OPENSSL_SIGNING_KEY_OPTIONS):
        for f in options.values.get(name, []):
            if _token_key(options, name, f):
                continue
            info = paths.read(state, f, inv.line, f"openssl {options.sub}", signing=True)
            if info is None:
                continue
            found = found or info
            if name == "CAkey":
                if info.written:
                    inv.find("signs-with-own-key", Severity.HIGH, f"signs with {f.text}, a key the script made itself, not the factory root")
                elif paths.norm(f.text) != facts.ROOT_KEY:
                    inv.find("signs-with-own-key", Severity.HIGH, f"signs with {f.text}, not the factory root's key")
            elif not info.written or info.origin != "keygen":
                inv.find("key-from-data", Severity.HIGH, f"signs with {f.text}, a key no key-generation command made here")
    return found


def _reads(inv: Invocation, options: Options) -> None:
    """Every other file option; -in of a key only where it converts the key into a file."""
    converting = options.sub in knowledge.OPENSSL_KEY_CONVERTERS and (options.get("out") or "pubout" in options.flags) \
        and "text" not in options.flags  # fmt: skip
    for name in sorted(knowledge.OPENSSL_READ_OPTIONS - knowledge.OPENSSL_SIGNING_KEY_OPTIONS):
        for f in options.values.get(name, []):
            if name == "in" and converting:
                paths.read(inv.state, f, inv.line, f"openssl {options.sub}", signing=True)
            elif name not in ("config", "extfile"):  # read and checked with their content
                paths.read(inv.state, f, inv.line, f"openssl {options.sub} -{name}")
    if options.sub in knowledge.OPENSSL_KEY_CONVERTERS and not options.get("in") and inv.stdin is not None \
            and inv.stdin.key and not converting:  # fmt: skip
        inv.find("reads-private-key", Severity.HIGH, f"openssl {options.sub} prints the private key {inv.stdin.key}")
    for value in options.values.get("rand", []):
        for part in value.text.split(":"):
            paths.read(inv.state, Field(Value.of(part), False, True, inv.line), inv.line, "openssl -rand")
    ca = options.get("CA")
    if "CAcreateserial" in options.flags and ca is not None:
        stem = ca.text.rsplit(".", 1)[0] if "." in ca.text.rsplit("/", 1)[-1] else ca.text
        paths.write(inv.state, Field(Value.of(stem + ".srl"), False, True, inv.line), inv.line, FileInfo(None, None, _SERIAL_ORIGIN))


def _loaders(inv: Invocation, options: Options) -> None:
    """Engines and providers load code into openssl; pass phrases name where a secret is."""
    for f in options.values.get("engine", []):
        if f.text != "pkcs11":
            inv.find("eval-data", Severity.HIGH, f"loads the openssl engine {f.text}: a shared library runs inside openssl")
            if "/" in f.text:
                paths.read(inv.state, f, inv.line, "openssl -engine")
    if options.sub == "engine" and any(f in ("pre", "post") for f in options.flags) or options.get("pre"):
        inv.find("eval-data", Severity.HIGH, "openssl engine -pre/-post loads and drives an engine: code runs inside openssl")
    for f in options.values.get("provider", []) + options.values.get("provider-path", []):
        if f.text not in ("default", "base", "pkcs11"):
            inv.find("eval-data", Severity.HIGH, f"loads the openssl provider {f.text}: a shared library runs inside openssl")
    for name in ("passin", "passout", "pass"):
        for f in options.values.get(name, []):
            pass_source(inv, f)


def pass_source(inv: Invocation, f: Field) -> None:
    """`env:NAME`, `file:PATH`, `pass:...` as openssl and pkcs11-tool name a secret."""
    text = f.text
    if text == f"env:{knowledge.HSM_PIN}":
        inv.find("reads-hsm-env", Severity.INFO, "passes env:HSM_PIN: the tool reads the PIN from the environment, as fioca's scripts do")
    elif text.startswith("env:"):
        read_env(inv.state, text[4:], inv.line)
    elif text.startswith("file:"):
        paths.read(inv.state, Field(Value.of(text[5:]), False, True, inv.line), inv.line, "openssl -pass")


def _products(inv: Invocation, options: Options, signing_key: FileInfo | None) -> Output:
    """What the command writes (or prints): keys it generates stay keys, wherever they go."""
    sub = options.sub
    generated = (sub == "ecparam" and "genkey" in options.flags) or sub in ("genpkey", "genrsa")
    key, origin = None, "data"
    if generated:
        key, origin = "a generated key", "keygen"
    elif sub in knowledge.OPENSSL_KEY_CONVERTERS and "pubout" not in options.flags:
        source = options.get("in")
        info = inv.state.file(source.text) if source is not None else None
        before = info if info is not None else FileInfo(None, inv.stdin.key, inv.stdin.origin) if inv.stdin else None
        if before is not None and before.key:
            key, origin = before.key, before.origin
        elif source is not None or inv.stdin is not None:
            key, origin = f"made from {source.text if source is not None else 'its input'}", "data"
    for name in ("writerand", "param_out", "outdir"):
        for f in options.values.get(name, []):
            paths.write(inv.state, f, inv.line, FileInfo(None, None, "data"))
    keyout = options.get("keyout")
    if keyout is not None:
        paths.write(inv.state, keyout, inv.line, FileInfo(None, keyout.text, "keygen" if options.get("newkey") else "data"))
    out = options.get("out")
    if out is not None:
        paths.write(inv.state, out, inv.line, FileInfo(None, out.text if key else None, origin))
        return Output()
    return Output(None, key, origin, reported=origin != "keygen" or options.get("in") is not None)


# --- what the certificate is -----------------------------------------------------------------


def _key_kind(inv: Invocation, options: Options) -> None:
    command, sub = inv.command, options.sub
    if sub == "ecparam" and options.get("name"):
        command.key_type, command.curve = "ec", options.text("name")
    elif sub == "genrsa":
        bits = next((f.text for f in reversed(options.positional)), "2048")
        command.key_type, command.key_bits = "rsa", int(bits) if bits.isdigit() else None
    elif sub == "genpkey" and options.get("algorithm"):
        command.key_type = (options.text("algorithm") or "").lower()
    if options.get("newkey"):
        kind, _, detail = (options.text("newkey") or "").partition(":")
        command.key_type = kind.lower()
        if kind.lower() == "rsa":
            command.key_bits = int(detail) if detail.isdigit() else 2048
    for f in options.values.get("pkeyopt", []):
        key, _, setting = f.text.partition(":")
        if key not in knowledge.OPENSSL_KEYGEN_SETTINGS and (sub == "genpkey" or options.get("newkey")):
            # OpenSSL 3.2 on derives an EC key from `dhkem-ikm` (hexdhkem-ikm:...): a key from data.
            inv.find("key-from-data", Severity.HIGH, f"-pkeyopt {f.text}: a key-generation setting the audit does not know; it can derive the key from data")
        if key in ("ec_paramgen_curve", "group"):
            command.curve = setting
        elif key == "rsa_keygen_bits" and setting.isdigit():
            command.key_bits = int(setting)
    if command.key_type == "rsa" and command.key_bits is None and sub in ("genpkey", "req"):
        command.key_bits = 2048
    if command.key_type == "rsa":
        if command.key_bits is not None and command.key_bits < 2048:
            inv.find("weak-crypto", Severity.HIGH, f"RSA key of {command.key_bits} bits; 2048 is the least, the profile is EC P-256")
        else:
            inv.find("differs-from-profile", Severity.LOW, "RSA key; the profile is EC P-256")
    elif command.key_type in ("dsa", "dh"):
        inv.find("weak-crypto", Severity.HIGH, f"{command.key_type.upper()} key; the profile is EC P-256")
    if command.curve is not None:
        bits = re.search(r"(\d{3})", command.curve)
        if bits and int(bits.group(1)) < 224:
            inv.find("weak-crypto", Severity.HIGH, f"curve {command.curve} is weaker than 224 bits; the profile is P-256")
        elif command.curve.lower() not in knowledge.PROFILE_CURVES:
            inv.find("differs-from-profile", Severity.LOW, f"curve {command.curve}; the profile is P-256 ({facts.CURVE_OPENSSL})")


def _validity(inv: Invocation, options: Options) -> None:
    days = options.get("days")
    if days is not None:
        inv.command.days = check_days(inv, days.value, f"openssl {options.sub} -days")
    for name in sorted(knowledge.OPENSSL_DATE_OPTIONS):
        if options.get(name):
            inv.find("backdated-validity", Severity.HIGH, f"-{name} {options.text(name)}: a start date other than now")
    for name in sorted(knowledge.OPENSSL_END_OPTIONS):
        if options.get(name):
            inv.find("unresolved-value", Severity.HIGH, f"-{name} {options.text(name)}: an end date set by hand, not the profile's days")
    if "preserve_dates" in options.flags:
        inv.find("backdated-validity", Severity.HIGH, "-preserve_dates keeps the dates of a certificate made elsewhere")


def check_days(inv: Invocation, value: Value, what: str) -> int | None:
    text = value.literal()
    if text is None or not text.strip().isdigit():
        inv.find("unresolved-value", Severity.HIGH, f"{what} {value.text}: a validity computed at run time")
        return None
    days = int(text)
    limit = inv.state.profile.max_days
    if limit is not None and days > limit:
        inv.find("validity-exceeds-profile", Severity.HIGH, f"{what} {days}: beyond the {limit} days of the {inv.state.profile.script} profile")
    return days


def _digest(inv: Invocation, options: Options) -> None:
    digest = next((f for f in options.flags if f in knowledge.DIGESTS), None)
    for name in ("md", "digest"):
        if options.get(name):
            digest = options.text(name)
    if digest is not None:
        inv.command.digest = digest
        check_digest(inv, Value.of(digest) if options.get("md") is None else options.get("md").value)


def check_digest(inv: Invocation, value: Value) -> None:
    name = value.text.lower().lstrip("-")
    if not value.known:
        inv.find("unresolved-value", Severity.HIGH, f"digest {value.text} is chosen at run time")
    elif name in knowledge.WEAK_DIGESTS:
        inv.find("weak-crypto", Severity.HIGH, f"digest {name}: broken for signatures; the profile is SHA-256")
    elif name not in (knowledge.PROFILE_DIGEST, "default"):
        inv.find("differs-from-profile", Severity.LOW, f"digest {name}; the profile is SHA-256")


def _serial(inv: Invocation, options: Options) -> None:
    serial = options.get("set_serial")
    if serial is not None:
        if serial.value.known and re.fullmatch(r"(0x)?[0-9A-Fa-f]+", serial.text):
            inv.find("differs-from-profile", Severity.LOW, f"-set_serial {serial.text}: a fixed serial, not a random one")
        else:
            inv.find("chosen-serial", Severity.HIGH, f"-set_serial {serial.text}: a serial computed by the script can carry data")
    # -CAcreateserial reads CA.srl when it is there, as -CAserial reads its file: a serial file
    # the script wrote holds a serial it chose (the audit does not follow which branch wrote it).
    serial_file = options.get("CAserial")
    ca = options.get("CA")
    if serial_file is None and "CAcreateserial" in options.flags and ca is not None:
        stem = ca.text.rsplit(".", 1)[0] if "." in ca.text.rsplit("/", 1)[-1] else ca.text
        serial_file = Field(Value.of(stem + ".srl"), False, True, inv.line)
    if serial_file is not None:
        info = inv.state.file(serial_file.text)
        if info is not None and info.written and info.origin != _SERIAL_ORIGIN:
            inv.find("chosen-serial", Severity.HIGH, f"serial file {serial_file.text}: written by the script, so the serial is one it chose")


_SERIAL_ORIGIN = "openssl-serial"  # a CA.srl openssl itself wrote (-CAcreateserial): a random serial, incremented


def _signer(inv: Invocation, options: Options) -> None:
    state, sub = inv.state, options.sub
    ca = options.get("CA")
    if ca is not None and state.profile.script != facts.CREATE_CA:
        info = state.file(ca.text)
        if info is not None and info.written:
            inv.find("signs-with-own-key", Severity.HIGH, f"names {ca.text} as the issuer, a certificate the script made itself")
    self_signed = (sub == "req" and "x509" in options.flags) or (sub == "x509" and (options.get("signkey") or (
        options.get("key") and not options.get("CA")))) or "selfsign" in options.flags  # fmt: skip
    if self_signed and state.profile.script in knowledge.PROFILES and not state.profile.makes_root:
        inv.find("signs-with-own-key", Severity.HIGH, f"makes a self-signed certificate; {state.profile.script} must sign with the factory root")


# --- configs and extension files --------------------------------------------------------------


@dataclass(eq=False)
class Config:
    """An openssl config or extension file the script wrote: sections of (key, value, line)."""

    sections: dict[str, list[tuple[str, str, int]]]

    def get(self, section: str, key: str) -> str | None:
        return next((v for k, v, _ in self.sections.get(section, []) if k == key), None)


def parse_config(text: str, first_line: int) -> Config:
    """Sections of (key, value, line), read as OpenSSL's NCONF reads them: a line ending in a
    backslash continues on the next (`openssl_\\` + `conf = init` is `openssl_conf`), `#`
    starts a comment unless escaped or quoted, and a value's escapes and quotes are undone."""
    sections: dict[str, list[tuple[str, str, int]]] = {"": []}
    name = ""
    for offset, raw in _config_lines(text):
        line = _without_comment(raw).strip()
        if not line:
            continue
        m = re.fullmatch(r"\[\s*([^\]]*?)\s*\]", line)
        if m:
            name = m.group(1)
            sections.setdefault(name, [])
            continue
        key, _, value = line.partition("=")
        sections.setdefault(name, []).append((key.strip(), _config_value(value.strip()), first_line + offset if first_line else 0))
    return Config(sections)


def _config_lines(text: str) -> list[tuple[int, str]]:
    """(offset of its first line, text) of each logical line: continuations joined."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, raw in enumerate(text.split("\n")):
        start, joined = pending if pending is not None else (offset, "")
        joined += raw
        trailing = len(joined) - len(joined.rstrip("\\"))
        if trailing % 2:
            pending = (start, joined[:-1])
            continue
        pending = None
        lines.append((start, joined))
    if pending is not None:
        lines.append(pending)
    return lines


def _without_comment(line: str) -> str:
    quote, i = None, 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if quote is None and c == "#":
            return line[:i]
        if c in "\"'":
            quote = None if quote == c else quote or c
        i += 1
    return line


def _config_value(value: str) -> str:
    """A value as NCONF copies it: quotes dropped, `\\n` `\\r` `\\b` `\\t` and `\\x` (any x) undone."""
    out, quote, i = [], None, 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            out.append({"n": "\n", "r": "\r", "b": "\b", "t": "\t"}.get(value[i + 1], value[i + 1]))
            i += 2
            continue
        if c in "\"'" and quote in (None, c):
            quote = None if quote == c else c
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _config(inv: Invocation, f: Field | None) -> Config | None:
    """The config a -config / -extfile names, when the script wrote its text; its content checked."""
    if f is None:
        return None
    info = paths.read(inv.state, f, inv.line, "openssl")
    if info is None or info.content is None:
        if info is not None:  # a file of the work dir the audit cannot read: another script may have planted it
            inv.find("unresolved-value", Severity.HIGH, f"reads the openssl config {f.text}, which this script did not write: the audit cannot see what it asks")
        return None
    config = parse_config(info.content.text, info.line)
    checked = (paths.norm(f.text), info.line)
    if checked in inv.state.world.configs_read:
        return config
    inv.state.world.configs_read.add(checked)
    for section, entries in config.sections.items():
        for key, value, line in entries:
            _config_entry(inv, key, value, line or inv.line)
    return config


def _config_entry(inv: Invocation, key: str, value: str, line: int) -> None:
    state = inv.state
    for m in re.finditer(r"\$\{?ENV::([A-Za-z_][A-Za-z0-9_]*)", value):
        read_env(state, m.group(1), line)
    if key.split()[0] in (".include", "include"):
        paths.read(state, Field(Value.of(value or key.split(None, 1)[-1]), False, True, line), line, "the openssl config")
    elif value.startswith(("/", "~")):
        paths.read(state, Field(Value.of(value), False, True, line), line, "the openssl config")
    if key in knowledge.OPENSSL_CODE_KEYS:
        state.find("eval-data", Severity.HIGH, line, f"the openssl config sets {key}: it can load code into openssl")
    if key in knowledge.OPENSSL_CONFIG_DATE_KEYS:
        state.find("backdated-validity", Severity.HIGH, line, f"the openssl config sets {key}: dates other than now")
    if key == "default_md":
        check_digest(_at(inv, line), Value.of(value) if "$" not in value else Value.unknown(value, "computed"))
    if key == "default_days":
        check_days(_at(inv, line), Value.of(value) if "$" not in value else Value.unknown(value, "computed"), "default_days")
    if key == "default_bits" and value.isdigit() and int(value) < 2048:
        state.find("weak-crypto", Severity.HIGH, line, f"default_bits = {value}: RSA below 2048 bits")
    if key in knowledge.KEY_IDENTIFIERS:
        plain = all(v.strip() in knowledge.PLAIN_KEY_IDENTIFIERS for v in value.split(","))
        if not plain:
            state.find("chosen-key-identifier", Severity.HIGH, line,
                       f"{key} = {value}: a key identifier the script chooses can carry data; openssl computes it from 'hash'")  # fmt: skip


def _at(inv: Invocation, line: int) -> Invocation:
    """The same command, its findings on a line of the config it reads."""
    return Invocation(inv.state, inv.argv, inv.name, line, inv.stdin, inv.stdout, inv.command, inv.run_argv, inv.run_code)


def _asked(inv: Invocation, options: Options, config: Config | None, extfile: Config | None) -> AskedCertificate | None:
    """The certificate a req -x509, x509 -req or ca command asks for, with every extension."""
    sub, flags = options.sub, options.flags
    if sub == "req" and "x509" in flags:
        kind, source = "req -x509", config
        section = options.text("extensions") or (config.get("req", "x509_extensions") if config else None)
    elif sub == "x509" and "req" in flags:
        kind, source = "x509 -req", extfile
        section = options.text("extensions") or (extfile.get("", "extensions") if extfile else None) or ""
    elif sub == "ca":
        kind, source = "ca", extfile or config
        section = options.text("extensions") or (extfile.get("", "extensions") if extfile else None)
    else:
        return None
    named = options.get("config") if sub == "req" else options.get("extfile") or (options.get("config") if sub == "ca" else None)
    if named is None and sub == "req":
        inv.find("differs-from-profile", Severity.LOW, "openssl req -x509 without -config: the system's openssl.cnf decides the extensions")
        extensions = None
    elif named is None:
        extensions = ()
    else:
        extensions = _extensions(source, section)
    if extensions is not None:
        extensions += tuple(_extension(*_split_line(f.text), None) for f in options.values.get("addext", []))
    inv.command.extensions = [f"{e.name} = {_shown(e)}" for e in extensions or ()]
    subject = _subject(options, config) if sub == "req" else None
    out = options.get("out")
    stdout = inv.stdout if inv.stdout not in (None, "|", "stderr") else None
    digest = inv.command.digest or (config.get("req", "default_md") if config and sub == "req" else None)
    days = inv.command.days if options.get("days") is not None else None if sub == "ca" else knowledge.OPENSSL_DEFAULT_DAYS
    self_signed = (sub in ("req", "x509") and not options.get("CA")) or bool(options.get("signkey")) or "selfsign" in flags
    return AskedCertificate(
        script=inv.state.profile.script, line=inv.line, command=kind, output=out.text if out is not None else stdout,
        self_signed=self_signed, days=days, digest=digest, extensions=extensions, subject=subject,
    )  # fmt: skip


def _split_line(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.strip(), value.strip()


def _extensions(config: Config | None, section: str | None) -> tuple[AskedExtension, ...] | None:
    if section is None:
        return ()
    if config is None:
        return None
    return tuple(_extension(k, v, config) for k, v, _ in config.sections.get(section, []))


def _extension(name: str, value: str, config: Config | None) -> AskedExtension:
    items = [v.strip() for v in value.split(",") if v.strip()]
    critical = bool(items) and items[0] == "critical"
    items = items[1:] if critical else items
    if "$" in value:
        return AskedExtension(name, critical, None)
    if len(items) == 1 and items[0].startswith("@") and config is not None:
        entries = config.sections.get(items[0][1:], [])
        items = [f"{k.split('.')[0]}:{v}" for k, v, _ in entries]
    return AskedExtension(name, critical, tuple(items))


def _shown(extension: AskedExtension) -> str:
    values = list(extension.values) if extension.values is not None else ["(computed at run time)"]
    return ", ".join((["critical"] if extension.critical else []) + values)


def _subject(options: Options, config: Config | None) -> tuple[tuple[str, str], ...] | None:
    subj = options.text("subj")
    if subj is not None:
        return tuple(tuple(p.split("=", 1)) for p in subj.strip("/").split("/") if "=" in p)  # type: ignore[misc]
    if config is None:
        return None
    dn = config.get("req", "distinguished_name")
    if dn is None:
        return None
    return tuple((k, v) for k, v, _ in config.sections.get(dn, []))


def _check_asked(inv: Invocation, asked: AskedCertificate) -> None:
    """What only the whole certificate shows: a root of trust with a path length."""
    if not inv.state.profile.makes_root or not asked.self_signed:
        return
    for extension in asked.extensions or ():
        if extension.name == "basicConstraints" and any(v.startswith("pathlen") for v in extension.values or ()):
            inv.find("root-pathlen", Severity.HIGH, "the root of trust asks for a path length: it limits every CA below it")


# --- pkcs11-tool and softhsm2-util ---------------------------------------------------------------

_P11_VALUES = {"--module", "--output-file", "-o", "--input-file", "-i", "--write-object", "-w", "--pin", "-p",
               "--so-pin", "--new-pin", "--type", "-y", "--token-label", "--label", "-a", "--id", "-d", "--key-type",
               "--slot", "--mechanism", "-m", "--object-index", "--signature-format", "--login-type"}  # fmt: skip


def pkcs11_tool(inv: Invocation) -> Output:
    state = inv.state
    texts = inv.texts
    module = inv.option("--module")
    if module is not None and not module.value.only_from("HSM_MODULE"):
        inv.find("eval-data", Severity.HIGH, f"pkcs11-tool loads the module {module.text}, not the one the user chose ($HSM_MODULE)")
    pin = inv.option("--pin", "-p")
    if pin is not None:
        pass_source(inv, pin)
    types = [inv.args[i + 1].text for i, f in enumerate(inv.args[:-1]) if f.text in ("--type", "-y")]
    if any(t in ("--read-object", "-r") for t in texts) and any(t in ("privkey", "secrkey") for t in types):
        inv.find("reads-private-key", Severity.HIGH, "pkcs11-tool --read-object of a private key")
    if any(t in ("--delete-object", "-b") for t in texts):
        inv.find("deletes-foreign-file", Severity.HIGH, "pkcs11-tool --delete-object removes an object from the token")
    for option in ("--init-token", "--init-pin", "--change-pin", "--unlock-pin", "--so-pin"):
        if option in texts:
            inv.find("privilege-change", Severity.HIGH, f"pkcs11-tool {option} changes the token's credentials")
    written = inv.option("--write-object", "-w")
    if written is not None:
        paths.read(state, written, inv.line, "pkcs11-tool", signing=True)
        if any(t in ("privkey", "secrkey") for t in types):
            inv.find("key-from-data", Severity.HIGH, f"pkcs11-tool --write-object {written.text}: puts a key on the token that no key-generation command made")
    for name in ("--input-file", "-i"):
        if inv.option(name) is not None:
            paths.read(state, inv.option(name), inv.line, "pkcs11-tool")
    out = inv.option("--output-file", "-o")
    if out is not None:
        paths.write(state, out, inv.line, FileInfo(None, None, "data"))
    return Output()


def softhsm2_util(inv: Invocation) -> Output:
    texts = inv.texts
    if "--init-token" in texts or "--delete-token" in texts:
        inv.find("privilege-change", Severity.HIGH, "softhsm2-util makes or removes a token")
    if "--import" in texts:
        inv.find("key-from-data", Severity.HIGH, "softhsm2-util --import puts a key on the token that no key-generation command made")
    return Output()
