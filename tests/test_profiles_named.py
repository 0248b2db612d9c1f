"""The profile tier: each PKI the world makes is recognised as the named profile it was made
to, and what only tells makers apart is reported as a difference, never refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from pki_fixtures import FIXTURE_PROFILES, Pki, shared_pki
from test_profiles import eku, key_usage, name, twin

from fioca import facts
from fioca.pki import profiles
from fioca.pki.profiles.named import CalendarYears, Days, validity_matches

FACTORY = "acme"
Role = profiles.Role


@pytest.fixture(scope="module")
def made() -> dict[str, Pki]:
    return {profile: shared_pki(profile) for profile in FIXTURE_PROFILES}


def _certificates(pki: Pki) -> list[tuple[str, x509.Certificate, profiles.Role, Any]]:
    return [
        ("tls-crt", pki.tls, Role.GATEWAY_TLS, pki.tls_csr),
        ("online-crt", pki.online_ca, Role.DEVICE_CA, pki.online_csr),
        ("local-ca.pem", pki.local_ca, Role.DEVICE_CA, None),
    ]


@pytest.mark.parametrize("profile", FIXTURE_PROFILES)
def test_each_certificate_is_recognised_as_its_profile(made: dict[str, Pki], profile: str) -> None:
    pki = made[profile]
    for artifact, cert, role, csr in [("factory_ca.pem", pki.root, Role.ROOT, None), *_certificates(pki)]:
        found = profiles.recognise(cert, role, issuer=pki.root, csr=csr)
        assert found.exact, found.note(artifact)
        assert profile in {found.profile.id, *(other.id for other in found.also)}, found.note(artifact)


@pytest.mark.parametrize("profile", FIXTURE_PROFILES)
def test_a_whole_pki_is_named_after_its_root(made: dict[str, Pki], profile: str) -> None:
    pki = made[profile]
    notes = profiles.pki_notes(pki.root, _certificates(pki))
    assert len(notes) == 4 and all(": matches the named profile " in note for note in notes), notes
    named = {note.split("matches the named profile ")[1].split(" ")[0] for note in notes}
    assert len(named) == 1, notes  # one profile names every certificate
    if profile not in ("fioca",):  # fioca's own PKI is, certificate for certificate, the 2026 scripts'
        assert named == {profile}, notes


def test_tells_the_go_versions_apart(made: dict[str, Pki]) -> None:
    root = made["fioctl-go-1.26"].root
    assert profiles.recognise(root, Role.ROOT).profile.id == "fioctl-go-1.26"
    older = made["fioctl-go-v0.41"].root
    found = profiles.recognise(older, Role.ROOT, candidates=(profiles.PROFILES_BY_ID["fioctl-go-1.26"],))
    assert found.differences == (found.differences[0],) and "subjectKeyIdentifier is keyid" in found.differences[0]


def test_tells_the_openssl_generations_apart(made: dict[str, Pki]) -> None:
    """The 2023 scripts' root without its subjectKeyIdentifier is what OpenSSL 1.1 made."""
    pki = made["api-2023-openssl-3"]
    stripped = twin(pki.root, pki.root_key, drop=[ExtensionOID.SUBJECT_KEY_IDENTIFIER])
    assert profiles.recognise(stripped, Role.ROOT).profile.id == "api-2023-openssl-1.1"
    assert profiles.recognise(pki.root, Role.ROOT).profile.id == "api-2023-openssl-3"


@pytest.mark.parametrize(
    ("profile", "changes", "difference"),
    [
        ("api-2026-openssl-3", {"days": 7305}, "valid 7305 days (profile: 7300 days)"),
        ("fioctl-go-v0.41", {"days": 7300}, "valid 7300 days (profile: 20 calendar years)"),
        ("api-2026-openssl-3",
         {"replace": [(eku(ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH), False)]},
         "extendedKeyUsage is not critical (profile: critical)"),
        ("fioctl-go-v0.41", {"replace": [(key_usage(key_cert_sign=True, crl_sign=True, digital_signature=True), True)]},
         "keyUsage is digitalSignature, keyCertSign, cRLSign (profile: keyCertSign, cRLSign)"),
        ("api-2026-openssl-3", {"subject": name("Root"), "issuer": name("Root")}, "subject is CN=Root,OU=acme"),
        ("fioctl-go-v0.41", {"replace": [(x509.OCSPNoCheck(), False)]}, "has noCheck"),
    ],
    ids=["script-days", "go-days", "eku-criticality", "key-usage-extra", "root-cn", "extra-extension"],
)  # fmt: skip
def test_root_differences_are_reported_not_refused(
    made: dict[str, Pki], profile: str, changes: dict, difference: str
) -> None:
    pki = made[profile]
    changed = twin(pki.root, pki.root_key, **changes)
    profiles.check_root(changed, factory=FACTORY)  # the trust tier lets it through
    found = profiles.recognise(changed, Role.ROOT, prefer=profiles.PROFILES_BY_ID[profile])
    assert not found.exact and any(item.startswith(difference) for item in found.differences), found.differences
    assert found.note("factory_ca.pem").startswith("factory_ca.pem: closest named profile is ")


def test_serial_style_is_reported(made: dict[str, Pki]) -> None:
    pki = made["api-2026-openssl-3"]
    counted = (
        x509.CertificateBuilder().subject_name(pki.root.subject).issuer_name(pki.root.subject)
        .public_key(pki.root.public_key()).serial_number(1)
        .not_valid_before(pki.root.not_valid_before_utc).not_valid_after(pki.root.not_valid_after_utc)
    )  # fmt: skip
    for extension in pki.root.extensions:
        counted = counted.add_extension(extension.value, critical=extension.critical)
    found = profiles.recognise(counted.sign(pki.root_key, hashes.SHA256()), Role.ROOT)
    assert "serial 1 is not random (profile: 159 random bits)" in found.differences
    go = made["fioctl-go-v0.41"].root
    diffs = profiles.profile_differences(profiles.PROFILES_BY_ID["api-2023-openssl-3"], go, Role.ROOT)
    assert "serial has 160 bits (profile: OpenSSL 3 draws 159)" in diffs


def test_subject_copying_is_compared_when_the_csr_is_known(made: dict[str, Pki]) -> None:
    """OpenSSL copies the CSR's subject as it is; Go re-encodes the same names in its own order."""
    go, script = made["fioctl-go-v0.41"], made["api-2026-openssl-3"]
    as_openssl, as_go = profiles.PROFILES_BY_ID["api-2026-openssl-3"], profiles.PROFILES_BY_ID["fioctl-go-v0.41"]
    copied = "subject is not the CSR's as OpenSSL copies it (the same names, order and encoding)"

    def subject_diffs(profile, pki: Pki, cert: x509.Certificate) -> list[str]:
        found = profiles.profile_differences(profile, cert, Role.DEVICE_CA, issuer=pki.root, csr=pki.online_csr)
        return [item for item in found if item.startswith("subject")]

    assert subject_diffs(as_openssl, go, go.online_ca) == [copied]
    assert subject_diffs(as_go, go, go.online_ca) == []
    assert subject_diffs(as_openssl, script, script.online_ca) == []
    assert subject_diffs(as_go, go, go.local_ca) == ["subject does not hold the CSR's names"]


def test_recognise_never_refuses(made: dict[str, Pki]) -> None:
    pki = made["fioca"]
    odd = twin(pki.tls, pki.root_key, drop=[ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE], days=1,
               replace=[(x509.BasicConstraints(ca=True, path_length=None), True)], algorithm=hashes.SHA512())  # fmt: skip
    found = profiles.recognise(odd, Role.GATEWAY_TLS, issuer=pki.root, csr=pki.tls_csr)
    assert not found.exact and "signed with sha512 (profile: sha256)" in found.differences
    assert any(item.startswith("has no keyUsage") for item in found.differences)


def test_calendar_years_as_go_adds_them() -> None:
    leap = datetime(2024, 2, 29, 12, 0, tzinfo=UTC)
    assert CalendarYears(10).end(leap) == datetime(2034, 3, 1, 12, 0, tzinfo=UTC)
    assert CalendarYears(20).end(leap) == datetime(2044, 2, 29, 12, 0, tzinfo=UTC)
    assert Days(7300).end(leap) == leap + timedelta(days=7300)


def test_validity_slack_follows_each_maker(made: dict[str, Pki]) -> None:
    go = made["fioctl-go-v0.41"]
    hour_later = twin(go.root, go.root_key, days=(go.root.not_valid_after_utc - go.root.not_valid_before_utc
                                                   + timedelta(hours=1)).total_seconds() / 86400)  # fmt: skip
    assert validity_matches(CalendarYears(20), hour_later)  # Go adds years in local time: DST moves it
    two_hours = twin(go.root, go.root_key, days=(hour_later.not_valid_after_utc - hour_later.not_valid_before_utc
                                                  + timedelta(hours=1)).total_seconds() / 86400)  # fmt: skip
    assert not validity_matches(CalendarYears(20), two_hours)
    script = made["api-2026-openssl-3"]
    assert validity_matches(Days(7300), twin(script.root, script.root_key, days=7300 + 1 / 86400))  # two clock reads
    assert not validity_matches(Days(7300), twin(script.root, script.root_key, days=7300 + 2 / 86400))


def test_profiles_are_defined_from_facts() -> None:

    for profile in profiles.PROFILES:
        validity = profile.shape(Role.ROOT).validity
        assert validity in (Days(facts.SCRIPT_VALIDITY.root), CalendarYears(facts.GO_YEARS.root))
        assert profile.shape(Role.ROOT).extensions  # every profile says what its root holds
    assert {profile.id for profile in profiles.PROFILES} >= set(FIXTURE_PROFILES)
    assert profiles.ROOT_CN == facts.ROOT_CN
