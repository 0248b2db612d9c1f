"""The strict checks of what fioca just made (exactly what the script's text asked for), the
upload check right before the PATCH (issue 10.4), and the re-issue of what a script made.

What each script asks is written here from the scripts' text (`scripts/`, `scripts/api-2023`,
`scripts/api-2026`), apart from the named profiles, so that a misreading in one shows in the other.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from pki_fixtures import Pki, gateway_csr, shared_pki
from test_profiles import fails, key_usage, twin

from fioca.pki import profiles
from fioca.pki.asked import AskedCertificate, AskedExtension

FACTORY = "acme"
Role = profiles.Role


def line(name: str, critical: bool, *values: str) -> AskedExtension:
    return AskedExtension(name, critical, values or None)


# What each script's text asks for, read from the scripts.
ASKED = {
    "api-2023": {
        Role.ROOT: AskedCertificate("create_ca", 39, "req -x509", "factory_ca.pem", True, 7300, "-sha256", (
            line("basicConstraints", False, "CA:TRUE"),
            line("keyUsage", False, "keyCertSign"),
            line("extendedKeyUsage", True, "clientAuth", "serverAuth"),
        ), (("CN", "Factory-CA"), ("OU", FACTORY))),
        Role.GATEWAY_TLS: AskedCertificate("sign_tls_csr", 30, "x509 -req", None, False, 3650, "-sha256", (
            line("keyUsage", True, "digitalSignature", "keyEncipherment", "keyAgreement"),
            line("extendedKeyUsage", True, "serverAuth"),
            line("subjectAltName", False),  # $dns
        )),
        Role.DEVICE_CA: AskedCertificate("sign_ca_csr", 26, "x509 -req", None, False, 3650, "-sha256", (
            line("keyUsage", True, "keyCertSign"),
            line("basicConstraints", True, "CA:TRUE", "pathlen:0"),
        )),
    },
    "fioca": {
        Role.ROOT: AskedCertificate("create_ca", 36, "req -x509", "factory_ca.pem", True, 7300, "-sha256", (
            line("basicConstraints", False, "CA:TRUE"),
            line("keyUsage", False, "keyCertSign", "cRLSign"),
            line("extendedKeyUsage", True, "clientAuth", "serverAuth"),
            line("subjectKeyIdentifier", False, "hash"),
        ), (("CN", "Factory-CA"), ("OU", FACTORY))),
        Role.GATEWAY_TLS: AskedCertificate("sign_tls_csr", 34, "x509 -req", None, False, 3650, "-sha256", (
            line("keyUsage", True, "digitalSignature"),
            line("extendedKeyUsage", True, "serverAuth"),
            line("subjectAltName", False),
            line("authorityKeyIdentifier", False, "keyid", "issuer"),
        )),
        Role.DEVICE_CA: AskedCertificate("sign_ca_csr", 27, "x509 -req", None, False, 3650, "-sha256", (
            line("keyUsage", True, "keyCertSign"),
            line("basicConstraints", True, "CA:TRUE", "pathlen:0"),
        )),
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def made() -> dict[str, Pki]:
    return {
        profile: shared_pki(profile)
        for profile in ("fioca", "api-2023-openssl-3", "api-2023-openssl-1.1", "fioctl-go-v0.41")
    }


@pytest.fixture
def fioca_pki(made) -> Pki:
    return made["fioca"]


def _certs(
    pki: Pki,
) -> list[tuple[x509.Certificate, Role, x509.Certificate | None, x509.CertificateSigningRequest | None]]:
    return [(pki.root, Role.ROOT, None, None), (pki.tls, Role.GATEWAY_TLS, pki.root, pki.tls_csr),
            (pki.online_ca, Role.DEVICE_CA, pki.root, pki.online_csr), (pki.local_ca, Role.DEVICE_CA, pki.root, None)]  # fmt: skip


def test_the_system_openssl_generation_is_read_once() -> None:
    version = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=True).stdout
    major = int(re.match(r"OpenSSL (\d+)", version)[1])
    assert profiles.openssl_generation() == (3 if major >= 3 else 1)
    assert profiles.openssl_generation.cache_info().currsize == 1


# --- As asked ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "script_set", "generation"), [
    ("fioca", "fioca", 3), ("api-2023-openssl-3", "api-2023", 3), ("api-2023-openssl-1.1", "api-2023", 1),
])  # fmt: skip
def test_what_the_scripts_made_is_as_asked(
    made: dict[str, Pki], profile: str, script_set: str, generation: int
) -> None:
    pki = made[profile]
    for cert, role, issuer, csr in _certs(pki):
        notes = profiles.check_as_asked(cert, ASKED[script_set][role], issuer=issuer, csr=csr, openssl=generation)
        if cert is pki.local_ca:
            assert notes == ("the subject was not compared with the script's text",)  # its CSR is gone
        else:
            assert notes == ()


def test_what_openssl_adds_by_itself_depends_on_its_version(made: dict[str, Pki]) -> None:
    one_one, three = made["api-2023-openssl-1.1"], made["api-2023-openssl-3"]
    with fails("factory_ca.pem: is not what create_ca line 39 asked for: has no subjectKeyIdentifier"):
        profiles.check_as_asked(one_one.root, ASKED["api-2023"][Role.ROOT], openssl=3)
    with fails("has subjectKeyIdentifier .*\\(asked: none\\)"):
        profiles.check_as_asked(three.root, ASKED["api-2023"][Role.ROOT], openssl=1)
    with fails("has authorityKeyIdentifier"):
        profiles.check_as_asked(
            three.tls, ASKED["api-2023"][Role.GATEWAY_TLS], issuer=three.root, csr=three.tls_csr, openssl=1
        )


def test_openssl_3_names_a_root_without_skid_by_its_name_and_serial(made: dict[str, Pki]) -> None:
    """Under a root OpenSSL 1.1 made (no SKID), OpenSSL 3's default AKID is the root's name and serial."""
    pki = made["api-2023-openssl-1.1"]
    key = profiles.new_key()
    csr = profiles.build_device_ca_csr(key, cn="line-2", factory=FACTORY)
    ca = profiles.sign_device_ca(csr, root_cert=pki.root, root_key=pki.root_key)
    akid = ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert akid.key_identifier is None and akid.authority_cert_serial_number == pki.root.serial_number
    profiles.check_as_asked(ca, ASKED["api-2023"][Role.DEVICE_CA], issuer=pki.root, csr=csr, openssl=3)
    profiles.check_device_ca(ca, root=pki.root, factory=FACTORY, csr=csr)


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"days": 7301}, "valid 630720000 s \\(asked: -days 7301, 630806400 s\\)"),
        ({"digest": "-sha384"}, "signed with sha256 \\(asked: sha384\\)"),
        ({"subject": (("CN", "Factory-CA"), ("OU", "other"))}, "subject is CN=Factory-CA,OU=acme \\(asked: CN=Factory-CA, OU=other\\)"),
        ({"extensions": (*ASKED["fioca"][Role.ROOT].extensions[:-1], line("subjectKeyIdentifier", False, "none"))},
         "has subjectKeyIdentifier .* \\(asked: none\\)"),
        ({"extensions": (*ASKED["fioca"][Role.ROOT].extensions, line("nsComment", False, "hello"))}, "has no nsComment"),
        ({"extensions": (line("basicConstraints", True, "CA:TRUE"), *ASKED["fioca"][Role.ROOT].extensions[1:])},
         "basicConstraints is not critical \\(asked: critical\\)"),
        ({"extensions": (line("basicConstraints", False, "CA:TRUE"), line("keyUsage", False, "keyCertSign"),
                         *ASKED["fioca"][Role.ROOT].extensions[2:])},
         "keyUsage is keyCertSign, cRLSign \\(asked: keyCertSign\\)"),
        ({"extensions": None}, "the audit could not tell which extensions the script asks for"),
        ({"extensions": (line("frobnicate", False, "yes"),)}, "asks for an extension fioca does not know: frobnicate"),
    ],
    ids=["days", "digest", "subject", "made-not-asked", "asked-not-made", "criticality", "value", "unknown-extensions",
         "unknown-name"],
)  # fmt: skip
def test_a_root_not_as_asked_fails(fioca_pki: Pki, change: dict, rule: str) -> None:
    asked = replace(ASKED["fioca"][Role.ROOT], **change)
    with fails(rule):
        profiles.check_as_asked(fioca_pki.root, asked, openssl=3)


def test_a_signed_csr_must_keep_the_csrs_subject_and_issuer(fioca_pki: Pki) -> None:
    asked = ASKED["fioca"][Role.GATEWAY_TLS]
    other = gateway_csr(ou=FACTORY)[0]  # the same names as the fixtures' gateway CSR, and an OU
    with fails("subject is .* \\(asked: the CSR's"):
        profiles.check_as_asked(fioca_pki.tls, asked, issuer=fioca_pki.root, csr=other, openssl=3)
    # The issuer's name re-encoded (PrintableString for UTF8String): equal to cryptography, not to OpenSSL's copy.
    printable = x509.Name([x509.NameAttribute(attribute.oid, attribute.value, _ASN1Type.PrintableString)
                           for attribute in fioca_pki.root.subject])  # fmt: skip
    renamed = twin(fioca_pki.tls, fioca_pki.root_key, issuer=printable)
    with fails("issuer is .* \\(asked: "):
        profiles.check_as_asked(renamed, asked, issuer=fioca_pki.root, csr=fioca_pki.tls_csr, openssl=3)
    with fails("issuer name is not encoded as the root's subject is"):  # and the trust tier cannot verify it
        profiles.check_gateway_tls(renamed, root=fioca_pki.root, csr=fioca_pki.tls_csr)


def test_computed_days_are_noted_not_compared(fioca_pki: Pki) -> None:
    notes = profiles.check_as_asked(fioca_pki.root, replace(ASKED["fioca"][Role.ROOT], days=None), openssl=3)
    assert notes == ("-days is computed at run time: the validity was not compared with the script's text",)


def test_made_by_scripts_names_the_set(made: dict[str, Pki]) -> None:
    three = made["api-2023-openssl-3"]
    assert (
        profiles.check_made_by_scripts(three.root, Role.ROOT, factory=FACTORY, openssl=3, artifact="r").id
        == "api-2023-openssl-3"
    )
    one_one = made["api-2023-openssl-1.1"]
    found = profiles.check_made_by_scripts(one_one.tls, Role.GATEWAY_TLS, issuer=one_one.root, csr=one_one.tls_csr,
                                           openssl=1, artifact="tls-crt")  # fmt: skip
    assert found.id == "api-2023-openssl-1.1"
    go = made["fioctl-go-v0.41"]
    with fails("factory_ca.pem: is not what any known script set asks for; closest is .*: valid"):
        profiles.check_made_by_scripts(go.root, Role.ROOT, factory=FACTORY, openssl=3, artifact="factory_ca.pem")


# --- The upload check ----------------------------------------------------------------------------


def _upload(pki: Pki, cert: x509.Certificate, role: Role, **kwargs):
    """check_upload as create calls it, for a certificate of `pki` (the gateway's with its CSR)."""
    arguments = dict(
        role=role, factory=FACTORY, issuer=None if role is Role.ROOT else pki.root,
        csr=pki.tls_csr if role is Role.GATEWAY_TLS else None, openssl=3, artifact="upload",
    )  # fmt: skip
    arguments.update(kwargs)
    return profiles.check_upload(cert, **arguments)


def test_upload_check_passes_what_the_scripts_made(made: dict[str, Pki]) -> None:
    for profile in ("fioca", "api-2023-openssl-3"):
        pki = made[profile]
        for cert, role, _issuer, csr in _certs(pki):
            _upload(pki, cert, role, csr=csr)
        _upload(
            pki,
            pki.root,
            Role.ROOT,
            key=pki.root_key,
            asked=ASKED["fioca" if profile == "fioca" else "api-2023"][Role.ROOT],
        )
        _upload(pki, pki.local_ca, Role.DEVICE_CA, key=pki.local_ca_key, expected_cn="fio-42")


def test_upload_refuses_a_backdated_root(fioca_pki: Pki) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    backdated = twin(fioca_pki.root, fioca_pki.root_key, not_before=now - timedelta(days=7000), days=7300)
    profiles.check_as_asked(backdated, ASKED["fioca"][Role.ROOT], openssl=3)  # as asked: -days 7300
    with fails("notBefore .* is not within 15 minutes of when it was made"):
        _upload(fioca_pki, backdated, Role.ROOT)
    # Twin: made a minute ago is fine; and a certificate stored long ago is judged by when it was stored.
    _upload(
        fioca_pki, twin(fioca_pki.root, fioca_pki.root_key, not_before=now - timedelta(minutes=1), days=7300), Role.ROOT
    )
    _upload(fioca_pki, backdated, Role.ROOT, made_at=backdated.not_valid_before_utc + timedelta(minutes=2))


def test_upload_refuses_a_root_with_a_pathlen(fioca_pki: Pki) -> None:
    asked = replace(ASKED["fioca"][Role.ROOT], extensions=(line("basicConstraints", False, "CA:TRUE", "pathlen:1"),
                                                            *ASKED["fioca"][Role.ROOT].extensions[1:]))  # fmt: skip
    root = twin(fioca_pki.root, fioca_pki.root_key, replace=[(x509.BasicConstraints(ca=True, path_length=1), False)])
    profiles.check_as_asked(root, asked, openssl=3)
    with fails("basicConstraints of the root must have no pathlen, got pathlen:1"):
        _upload(fioca_pki, root, Role.ROOT, asked=asked)


def test_upload_refuses_a_skid_that_carries_data(fioca_pki: Pki) -> None:
    chosen = bytes(range(20))  # anything a script likes: a slice of a key, a message
    asked = replace(ASKED["fioca"][Role.ROOT], extensions=(*ASKED["fioca"][Role.ROOT].extensions[:-1],
                                                           line("subjectKeyIdentifier", False, chosen.hex())))  # fmt: skip
    root = twin(fioca_pki.root, fioca_pki.root_key, replace=[(x509.SubjectKeyIdentifier(chosen), False)])
    profiles.check_as_asked(root, asked, openssl=3)  # exactly what the text asked
    with fails("subjectKeyIdentifier is not the SHA-1 of the public key"):
        _upload(fioca_pki, root, Role.ROOT, asked=asked)


def test_upload_refuses_an_akid_that_is_not_the_issuers(fioca_pki: Pki) -> None:
    asked = replace(ASKED["fioca"][Role.DEVICE_CA], extensions=(*ASKED["fioca"][Role.DEVICE_CA].extensions,
                                                                line("authorityKeyIdentifier", False)))  # fmt: skip
    ca = twin(fioca_pki.online_ca, fioca_pki.root_key,
              replace=[(x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(fioca_pki.root.subject)], 12345), False)])  # fmt: skip
    with fails("authorityKeyIdentifier names serial 12345"):  # the trust tier sees this one already
        _upload(fioca_pki, ca, Role.DEVICE_CA, asked=asked)
    with_keyid = twin(fioca_pki.online_ca, fioca_pki.root_key, replace=[(x509.AuthorityKeyIdentifier(
        profiles.subject_key_identifier(fioca_pki.root), [x509.DirectoryName(fioca_pki.root.issuer)],
        fioca_pki.root.serial_number), False)])  # fmt: skip
    _upload(fioca_pki, with_keyid, Role.DEVICE_CA, asked=asked)  # twin: the issuer's own name and serial


def test_upload_refuses_more_than_a_profile_allows(fioca_pki: Pki) -> None:
    century = replace(ASKED["fioca"][Role.GATEWAY_TLS], days=36500)
    tls = twin(fioca_pki.tls, fioca_pki.root_key, days=36500)
    profiles.check_as_asked(tls, century, issuer=fioca_pki.root, csr=fioca_pki.tls_csr, openssl=3)
    with fails("notAfter .* is later than any named profile allows for a gateway-tls certificate"):
        _upload(fioca_pki, tls, Role.GATEWAY_TLS, asked=century)
    # Twin: fioctl's Go PKI allows ten calendar years, a day or two more than 3650 days.
    decade = replace(century, days=3652)
    _upload(fioca_pki, twin(fioca_pki.tls, fioca_pki.root_key, days=3652), Role.GATEWAY_TLS, asked=decade)


@pytest.mark.parametrize("extra", ["ns-comment", "data-encipherment"])
def test_upload_refuses_an_extension_no_profile_has(fioca_pki: Pki, extra: str) -> None:
    base = ASKED["fioca"][Role.DEVICE_CA]
    if extra == "ns-comment":
        comment = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.16.840.1.113730.1.13"), b"\x16\x05hello")
        asked = replace(base, extensions=(*base.extensions, line("nsComment", False)))
        ca = twin(fioca_pki.online_ca, fioca_pki.root_key, replace=[(comment, False)])
        rule = "nsComment is not as any named profile has it"
    else:
        asked = replace(
            base, extensions=(line("keyUsage", True, "keyCertSign", "dataEncipherment"), base.extensions[1])
        )
        ca = twin(
            fioca_pki.online_ca,
            fioca_pki.root_key,
            replace=[(key_usage(key_cert_sign=True, data_encipherment=True), True)],
        )
        rule = "keyUsage is not as any named profile has it"
    profiles.check_as_asked(ca, asked, issuer=fioca_pki.root, csr=fioca_pki.online_csr, openssl=3)
    with fails(rule):
        _upload(fioca_pki, ca, Role.DEVICE_CA, asked=asked)


def test_upload_refuses_a_key_that_is_not_the_certificates(fioca_pki: Pki) -> None:
    with fails("private key does not belong to the certificate"):
        _upload(fioca_pki, fioca_pki.root, Role.ROOT, key=fioca_pki.local_ca_key)


def test_upload_refuses_what_breaks_trust_first(fioca_pki: Pki) -> None:
    with fails("subject CN must be 'fio-7'"):
        _upload(fioca_pki, fioca_pki.local_ca, Role.DEVICE_CA, expected_cn="fio-7")
    with fails("subject OU must be the factory name 'other'"):
        _upload(fioca_pki, fioca_pki.root, Role.ROOT, factory="other")


# --- Re-issue -----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["fioca", "api-2023-openssl-1.1", "fioctl-go-v0.41"])
def test_reissue_keeps_everything_but_serial_and_signature(made: dict[str, Pki], profile: str) -> None:
    pki = made[profile]
    issued = {"tls-crt": pki.tls, "online-crt": pki.online_ca, "local-ca.pem": pki.local_ca}
    root, again = profiles.reissue_pki(pki.root, pki.root_key, issued)
    for old, new in [(pki.root, root), *((issued[name], again[name]) for name in issued)]:
        assert new.serial_number != old.serial_number and new.signature != old.signature
        assert new.subject.public_bytes() == old.subject.public_bytes()
        assert new.issuer.public_bytes() == old.issuer.public_bytes()
        assert new.public_key() == old.public_key()
        assert (new.not_valid_before_utc, new.not_valid_after_utc) == (
            old.not_valid_before_utc,
            old.not_valid_after_utc,
        )
        assert [(e.oid, e.critical, e.value) for e in new.extensions] == [
            (e.oid, e.critical, e.value) for e in old.extensions
        ]
        assert new.serial_number.bit_length() <= 159
    profiles.check_root(root, factory=FACTORY)
    profiles.check_gateway_tls(again["tls-crt"], root=root, csr=pki.tls_csr)
    profiles.check_device_ca(again["online-crt"], root=root, factory=FACTORY, csr=pki.online_csr)
    profiles.check_device_ca(again["local-ca.pem"], root=root, factory=FACTORY, expected_cn="fio-42")
    # The old certificates do not chain to the new root's serial-bearing identity any more than before.
    assert profiles.recognise(root, Role.ROOT).profile.id == profiles.recognise(pki.root, Role.ROOT).profile.id


def test_reissue_renews_an_akid_that_names_the_roots_serial(made: dict[str, Pki]) -> None:
    pki = made["api-2023-openssl-1.1"]  # no SKID on the root: OpenSSL 3 names it by name and serial
    key = profiles.new_key()
    csr = profiles.build_device_ca_csr(key, cn="line-2", factory=FACTORY)
    ca = profiles.sign_device_ca(csr, root_cert=pki.root, root_key=pki.root_key)
    root, again = profiles.reissue_pki(pki.root, pki.root_key, {"line-2.pem": ca})
    akid = again["line-2.pem"].extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert akid.authority_cert_serial_number == root.serial_number != pki.root.serial_number
    profiles.check_device_ca(again["line-2.pem"], root=root, factory=FACTORY, csr=csr)
    # Twin: the first certificate, naming the old serial, no longer points at the new root.
    with fails("authorityKeyIdentifier names serial"):
        profiles.check_device_ca(ca, root=root, factory=FACTORY, csr=csr)


def test_reissue_refuses_a_key_that_is_not_the_signers(fioca_pki: Pki) -> None:
    with fails("the re-issuing key is not the key of CN=Factory-CA,OU=acme"):
        profiles.reissue(fioca_pki.tls, signer_key=fioca_pki.local_ca_key, issuer=fioca_pki.root)
    with fails("the re-issuing key is not the key of"):
        profiles.reissue(fioca_pki.root, signer_key=fioca_pki.local_ca_key)


def test_reissued_root_passes_the_upload_check(fioca_pki: Pki) -> None:
    root, again = profiles.reissue_pki(fioca_pki.root, fioca_pki.root_key, {"tls-crt": fioca_pki.tls})
    profiles.check_upload(root, role=Role.ROOT, factory=FACTORY, key=fioca_pki.root_key, openssl=3,
                          made_at=fioca_pki.root.not_valid_before_utc, artifact="factory_ca.pem")  # fmt: skip
    profiles.check_upload(again["tls-crt"], role=Role.GATEWAY_TLS, factory=FACTORY, issuer=root, csr=fioca_pki.tls_csr,
                          openssl=3, made_at=fioca_pki.tls.not_valid_before_utc, artifact="tls-crt")  # fmt: skip
    # Twin: the scripts' own root, re-issued by a key that is not its own, is refused before it is made.
    with fails("the re-issuing key is not the key of"):
        profiles.reissue_pki(fioca_pki.root, fioca_pki.local_ca_key, {})
