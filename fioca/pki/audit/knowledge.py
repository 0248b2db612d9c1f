"""What the audit knows about programs, variables and files: plain tables, no logic.

The walker and the openssl reader look names up here; a fact about the world (which programs
reach the network, which variables fioca sets for a script, which files are private keys, how
long each script's certificate may be valid) is written once, in this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fioca import facts

# --- programs ---------------------------------------------------------------------------------

NETWORK = {
    "curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "scp", "sftp", "rsync", "telnet", "ftp", "tftp",
    "lftp", "nslookup", "dig", "host", "ping", "ping6", "git", "http", "https", "xh", "aria2c", "smbclient",
    "mail", "mailx", "sendmail", "mutt", "busctl", "openvpn", "pip", "pip3", "npm", "apt", "apt-get", "yum",
    "dnf", "apk", "drill", "kdig", "resolvectl", "getent", "gcloud", "aws", "az", "gh", "fioctl",
}  # fmt: skip
INTERPRETERS = {"python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh", "Rscript", "gdb",
                "vim", "vi", "ex", "ed", "expect", "bc", "dc"}  # fmt: skip
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "fish", "csh", "tcsh", "busybox"}
PRIVILEGE = {"sudo", "su", "doas", "pkexec", "chown", "chgrp", "setfacl", "chattr", "setcap", "mount", "umount", "chroot",
             "runuser", "nsenter", "unshare", "capsh", "passwd", "useradd", "usermod", "visudo", "insmod", "modprobe"}  # fmt: skip
PERSISTENCE = {"crontab", "at", "batch", "systemctl", "service", "launchctl", "update-rc.d", "loginctl", "systemd-run"}
# Programs that run the command after their own options.
WRAPPERS = {"command", "builtin", "exec", "nice", "time", "timeout", "env", "stdbuf", "ionice", "chrt", "flock",
            "doas", "sudo", "runuser", "su", "xargs"}  # fmt: skip
DETACHING = {"nohup", "setsid", "disown", "daemonize", "start-stop-daemon", "screen", "tmux", "dtach"}
CLOCK_FAKERS = {"faketime", "datefudge", "libfaketime"}
PROCESS_CONTROL = {"kill", "pkill", "killall"}
DECODERS = {"base64": ("-d", "--decode", "-D"), "xxd": ("-r",), "uudecode": (), "gunzip": (), "zcat": (),
            "bunzip2": (), "unxz": (), "unzip": (), "gzip": ("-d", "--decompress"), "bzip2": ("-d",), "xz": ("-d",)}  # fmt: skip
# Programs that only print what they are given or compute from it, touching no file.
PURE = {"echo", "printf", "true", "false", ":", "exit", "return", "shift", "sleep", "date", "uuidgen", "seq", "expr",
        "yes", "break", "continue", "wait", "unset", "basename", "dirname", "tr", "logger", "let", "id", "whoami",
        "uname", "hostname", "tput", "pwd", "getopts", "hash", "type", "which", "test", "[", "umask", "times"}  # fmt: skip
# Programs that read the files named as operands.
READERS = {"cat", "head", "tail", "wc", "sort", "uniq", "cut", "paste", "fold", "rev", "tac", "nl", "od", "hexdump",
           "xxd", "base64", "cmp", "diff", "md5sum", "sha1sum", "sha256sum", "sha512sum", "ls", "stat", "file",
           "readlink", "realpath", "grep", "egrep", "fgrep", "strings", "comm", "join", "expand", "unexpand",
           "fmt", "pr", "split", "csplit", "cksum", "sum", "b2sum", "jq", "gzip", "bzip2", "xz", "tar", "cpio", "zip"}  # fmt: skip
DELETERS = {"rm", "rmdir", "unlink", "shred"}
# Every program whose name a function or alias must not take.
TOOLS = (NETWORK | INTERPRETERS | SHELLS | PRIVILEGE | PERSISTENCE | WRAPPERS | DETACHING | PURE | READERS | DELETERS
         | {"openssl", "pkcs11-tool", "cp", "mv", "ln", "install", "mkdir", "touch", "chmod", "dd", "find", "tee",
            "sed", "awk", "gawk", "mawk", "nawk", "eval", "source", ".", "set", "export", "cd", "trap", "alias",
            "read", "local", "readonly", "mktemp", "truncate", "softhsm2-util", "p11tool", "link"})  # fmt: skip

# Options that take a value, per program, so that the value is not taken for a file.
VALUE_OPTIONS = {
    "head": {"-n", "-c"}, "tail": {"-n", "-c"}, "cut": {"-d", "-f", "-c", "-b"}, "sort": {"-k", "-t", "-o"},
    "grep": {"-e", "-f", "-m", "-A", "-B", "-C", "--regexp", "--file"}, "egrep": {"-e", "-f", "-m"},
    "fgrep": {"-e", "-f", "-m"}, "sed": {"-e", "-f", "--expression", "--file"}, "xxd": {"-l", "-s", "-c", "-g"},
    "od": {"-A", "-t", "-N", "-j"}, "base64": {"-w"}, "diff": {"-U"}, "awk": {"-F", "-v", "-f"}, "tar": {"-C", "-f"},
    "mkdir": {"-m"}, "install": {"-m", "-o", "-g", "-t"}, "cp": {"-t", "--target-directory"},
    "mv": {"-t", "--target-directory"}, "ln": {"-t", "--target-directory"}, "truncate": {"-s"},
    "mktemp": {"-p", "--tmpdir"}, "tr": set(), "split": {"-b", "-l", "-n"}, "fold": {"-w"}, "wc": set(),
}  # fmt: skip

# --- variables ---------------------------------------------------------------------------------

# What fioca sets for a script in HSM mode (fioca/pki/hsm.py), read as INFO.
HSM_VARS = ("HSM_MODULE", "HSM_TOKEN_LABEL", "HSM_PIN")
HSM_PIN = "HSM_PIN"
# The values fioca's own scripts take from the environment (reference.script_env).
SCRIPT_VALUE_VARS = ("FACTORY", "LOCAL_CA_CN")
# The runner's minimal environment (fioca/pki/scripts.py): HOME and TMPDIR are the work dir
# there, but a script reaching for them means the user's, so paths from them are outside.
RUNNER_VARS = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE")
HOME_VARS = {"HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "OLDPWD"}
TMP_VARS = {"TMPDIR", "TMP", "TEMP"}
SECRET_NAME = re.compile(r"TOKEN|PIN|PASS|SECRET|KEY|CRED|AUTH|PRIVATE|COOKIE|SESSION|^FIOCTL_|^OSF|^AWS_|^GITHUB_|^SSH_")
# Variables that make a program load code (or a config that loads code) from where they point.
# PKCS11_MODULE_PATH="$HSM_MODULE" is expected: the pkcs11 engine loads the user's own module.
LOADS_CODE_VARS = {"PKCS11_MODULE_PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "OPENSSL_CONF", "OPENSSL_ENGINES",
                   "OPENSSL_MODULES", "PATH", "ENV", "BASH_ENV", "PYTHONPATH", "PERL5LIB", "GCONV_PATH", "IFS"}  # fmt: skip
CLOCK_VARS = {"FAKETIME", "FAKETIME_TIMESTAMP_FILE", "FAKETIME_START_AFTER_SECONDS", "DATEFUDGE"}
# Special parameters: their values are the shell's, never the environment's.
SPECIAL_PARAMS = set("#?@*$!-0123456789") | {"PPID", "LINENO", "RANDOM", "OPTIND", "OPTARG", "PWD"}

# --- files ------------------------------------------------------------------------------------

PRIVATE_KEYS = {facts.ROOT_KEY, facts.LOCAL_CA_KEY}
KEY_NAME = re.compile(r"\.key$|(^|/)id_(rsa|ecdsa|ed25519|dsa)|(^|/)pkey\.pem$|private")
# PKI files a script must not write unless it is the one meant to make them (PKI-SPEC 1, 3).
PKI_FILES = {
    facts.ROOT_KEY, facts.ROOT_CERT, facts.LOCAL_CA_KEY, facts.LOCAL_CA_CERT, facts.TLS_CERT, facts.TLS_CSR,
    facts.ONLINE_CA_CSR, facts.ONLINE_CA_CERT, "ca-crt", facts.EST_TLS_CERT, facts.FACTORY_CERTS_JSON, *facts.SCRIPT_NAMES,
}  # fmt: skip
ALLOWED_DEVICES = {"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/fd/0", "/dev/fd/1", "/dev/fd/2"}
RANDOM_DEVICES = {"/dev/urandom", "/dev/random", "/dev/zero"}
NETWORK_DEVICES = ("/dev/tcp/", "/dev/udp/")
# Where credentials live: the fioctl config (its token), ssh, cloud and git credentials.
CREDENTIAL_PATH = re.compile(r"fioctl\.ya?ml|\.config/fioctl|\.ssh/|\.netrc|\.aws/|\.docker/config|\.git-credentials"
                             r"|\.gnupg/|\.kube/config|authorized_keys")  # fmt: skip
PROGRAM_DIRS = ("/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/", "/usr/local/bin/", "/usr/local/sbin/")

# --- characters ---------------------------------------------------------------------------------

# Bidi controls, zero-width characters, tag characters: text that does not read as it runs.
INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]")
# Terminal controls: ESC sequences, carriage returns and backspaces rewrite what a terminal shows.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")

# --- openssl ----------------------------------------------------------------------------------

WEAK_DIGESTS = {"md2", "md4", "md5", "mdc2", "sha1", "sha", "ripemd160", "rmd160", "whirlpool"}
DIGESTS = WEAK_DIGESTS | {"sha224", "sha256", "sha384", "sha512", "sha512-224", "sha512-256", "sha3-224", "sha3-256",
                          "sha3-384", "sha3-512", "sm3", "blake2b512", "blake2s256", "shake128", "shake256"}  # fmt: skip
PROFILE_DIGEST = "sha256"
PROFILE_CURVES = {facts.CURVE_OPENSSL, facts.CURVE_SEC, facts.CURVE_NIST.lower()}
OPENSSL_DEFAULT_DAYS = 30

# openssl options that take a value (across the subcommands scripts use).
OPENSSL_VALUE_OPTIONS = {
    "in", "out", "config", "extfile", "extensions", "key", "keyout", "keyform", "CAkeyform", "CA", "CAkey", "CAserial",
    "CAform", "days", "set_serial", "subj", "newkey", "name", "pkeyopt", "algorithm", "engine", "passin", "passout",
    "signkey", "inform", "outform", "md", "digest", "paramfile", "reqexts", "addext", "certfile", "CAfile", "CApath",
    "untrusted", "rand", "writerand", "sigopt", "vfyopt", "nameopt", "certopt", "reqopt", "ext", "checkhost",
    "checkemail", "checkip", "set_subject", "force_pubkey", "inkey", "cert", "keyfile", "cipher", "pass", "iter",
    "kdf", "K", "iv", "S", "connect", "host", "port", "url", "servername", "crlexts", "section", "startdate",
    "enddate", "crl_reason", "revoke", "crldays", "crlhours", "policy", "outdir", "ss_cert", "spkac", "param_out",
    "conv_form", "param_enc", "copy_extensions", "not_before", "not_after", "dgst", "accept", "proxy", "kdfopt",
    "propquery", "provider", "provider-path", "CRL", "crl_compromise", "crl_CA_compromise", "valid", "peerkey",
    "sigfile", "keyopt", "keygen_engine", "set_issuer", "pre", "post",
}  # fmt: skip
# Options that take a value only in some subcommands (`req -verify` is a flag, `dgst -verify` is not).
OPENSSL_SUB_VALUE_OPTIONS = {
    "dgst": {"sign", "verify", "prverify", "signature", "mac", "macopt", "hmac"},
    "pkeyutl": {"sigfile", "peerkey"},
    "smime": {"sign", "signer", "recip"},
    "cms": {"sign", "signer", "recip"},
}
OPENSSL_READ_OPTIONS = {"in", "config", "extfile", "key", "CA", "CAkey", "CAserial", "signkey", "paramfile", "certfile",
                        "CAfile", "untrusted", "inkey", "cert", "keyfile", "ss_cert", "spkac", "peerkey", "signature",
                        "prverify", "verify", "sign", "signer", "CRL", "sigfile"}  # fmt: skip
# The options through which openssl signs with a key: the only proper readers of a private key.
OPENSSL_SIGNING_KEY_OPTIONS = {"key", "CAkey", "signkey"}
OPENSSL_KEY_CONVERTERS = {"ec", "pkey"}  # `-in KEY -out FILE` writes the key in another form
OPENSSL_NETWORK = {"s_client", "s_server", "s_time", "ocsp", "cmp", "tsget", "httpd"}
OPENSSL_DECODERS = {"base64", "enc"}
OPENSSL_DATE_OPTIONS = {"startdate", "not_before"}  # a start date other than now: backdating
OPENSSL_END_OPTIONS = {"enddate", "not_after"}
# -pkeyopt settings that choose a key's kind or size, and nothing of its value.
OPENSSL_KEYGEN_SETTINGS = {"ec_paramgen_curve", "group", "ec_param_enc", "encoding", "point-format", "rsa_keygen_bits",
                           "bits", "rsa_keygen_pubexp", "e", "rsa_keygen_primes", "primes"}  # fmt: skip
# subjectKeyIdentifier / authorityKeyIdentifier values openssl computes itself.
PLAIN_KEY_IDENTIFIERS = {"hash", "keyid", "keyid:always", "none", "issuer", "issuer:always"}
KEY_IDENTIFIERS = {"subjectKeyIdentifier", "authorityKeyIdentifier"}
# Config keys that load code into openssl.
OPENSSL_CODE_KEYS = {"dynamic_path", "MODULE_PATH", "engines", "providers", "openssl_conf", "module"}
OPENSSL_CONFIG_DATE_KEYS = {"default_startdate", "default_enddate"}

# --- the profile of each script ---------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """What one script is for: how long its certificate may be valid, what it may write."""

    script: str
    max_days: int | None
    outputs: frozenset[str]  # files it is meant to make ($1, $2: its arguments)
    inputs: frozenset[str]  # files it is handed and must not overwrite
    makes_root: bool = False


PROFILES: dict[str, Profile] = {
    facts.CREATE_CA: Profile(facts.CREATE_CA, facts.SCRIPT_VALIDITY.root,
                             frozenset({facts.ROOT_KEY, facts.ROOT_CERT}), frozenset(), makes_root=True),
    facts.SIGN_TLS_CSR: Profile(facts.SIGN_TLS_CSR, facts.SCRIPT_VALIDITY.gateway_tls, frozenset(), frozenset({"$1"})),
    facts.SIGN_CA_CSR: Profile(facts.SIGN_CA_CSR, facts.SCRIPT_VALIDITY.device_ca, frozenset(), frozenset({"$1"})),
    facts.CREATE_DEVICE_CA: Profile(facts.CREATE_DEVICE_CA, facts.SCRIPT_VALIDITY.device_ca, frozenset({"$1", "$2"}),
                                    frozenset()),
}  # fmt: skip
# The arguments each script is run with, by position, and what they are.
PRIVATE_KEY_ARGS = {facts.CREATE_DEVICE_CA: {"$1"}}


def profile_for(script: str) -> Profile:
    """A script outside the four still gets a profile: no validity allowance, nothing to make."""
    return PROFILES.get(script, Profile(script, None, frozenset(), frozenset()))
