"""fioctl's layouts, byte for byte, on fixed certificates: what `ca_show.go`'s prettyPrint and
`ca_revoke_device_ca.go`'s prettyPrintCrl print (Go's Println spacing, pkix.Name.String(),
time.Time.String(), fioctl's own words for key usages), and doShowCA's blank lines."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca.cli import fioctl_layout
from fioca.pki import profiles

KEY = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
START = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
END = datetime(2034, 1, 2, 3, 4, 5, tzinfo=UTC)
ISSUER = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Factory-CA"), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "acme")])


def certificate() -> x509.Certificate:
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "dev, one"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "acme"),
        x509.NameAttribute(NameOID.BUSINESS_CATEGORY, "production"),
    ])
    names = [
        x509.DNSName("gw.example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
        x509.IPAddress(ipaddress.ip_address("::ffff:1.2.3.4")),
        x509.UniformResourceIdentifier("spiffe://example/gw"),
        x509.RFC822Name("ops@example.com"),
    ]
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ISSUER)
        .public_key(KEY.public_key())
        .serial_number(123456789)
        .not_valid_before(START)
        .not_valid_after(END)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(profiles.key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier(bytes(range(20))), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(bytes(range(20, 40)), None, None), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00"), critical=False)
        .sign(KEY, hashes.SHA256())
    )


def point_lines() -> str:
    """fioctl prints the point as `%02x:` per byte, a newline and three tabs after every 15th."""
    point = KEY.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    octets = [f"{byte:02x}:" for byte in point]
    rows = ["".join(octets[i : i + 15]) for i in range(0, len(octets), 15)]
    return "\t\t\t" + "\n\t\t\t".join(rows) + "\n"


def test_pretty_certificate_is_fioctls_layout():
    pem = profiles.cert_pem(certificate()).decode()
    expected = (
        "Certificate:\n"
        "\tVersion: 3\n"
        "\tSerial Number: 123456789\n"
        "\tSignature Algorithm: ECDSA-SHA256\n"
        "\tIssuer: CN=Factory-CA,OU=acme\n"
        "\tValidity\n"
        "\t\tNot Before: 2024-01-02 03:04:05 +0000 UTC\n"
        "\t\tNot After: 2034-01-02 03:04:05 +0000 UTC\n"
        "\tSubject: CN=dev\\, one,OU=acme,2.5.4.15=#130a70726f64756374696f6e\n"
        "\tSubject Public Key Info\n"
        "\t\tNIST CURVE: P-256\n"
        + point_lines()
        + "\tIs CA: true\n"
        "\tExtensions:\n"
        "\t\tx509v3 Basic Constraints: (critical)\n"
        "\t\t\tCA:TRUE MaxPath  0\n"
        "\t\tx509v3 Key Usage: (critical)\n"
        "\t\t\t keyCertSign cRLSign \n"
        "\t\tx509v3 Extended Key Usage: \n"
        "\t\t\t ServerAuth ClientAuth \n"
        "\t\tx509v3 Subject Key Id: \n"
        f"\t\t\t {bytes(range(20)).hex()}\n"
        "\t\tx509v3 Authority Key Id: \n"
        f"\t\t\t {bytes(range(20, 40)).hex()}\n"
        "\t\tx509v3 Subject Name Alternative: \n"
        "\t\t\tDNS: gw.example.com\n"
        "\t\t\tIP: 192.0.2.7\n"
        "\t\t\tIP: 1.2.3.4\n"
        "\t\t\tURI: spiffe://example/gw\n"
        "\t\t\tEmail: ops@example.com\n"
        "\t\tUnknown OID 1.2.3.4.5\n"
    )
    assert fioctl_layout.pretty_certificates(pem) == expected
    # A bundle: one block after the other, no blank line; text before a block is skipped.
    assert fioctl_layout.pretty_certificates("comment\n" + pem + pem) == expected * 2
    # Text after the last block is reported, as fioctl reports it.
    assert fioctl_layout.pretty_certificates(pem + "\n## trailing\n").endswith(
        "Failed to parse remaining certificates: invalid PEM data\n"
    )


def test_go_names():
    def name(*pairs):
        return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])

    assert fioctl_layout.go_name(name((NameOID.ORGANIZATIONAL_UNIT_NAME, "a"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "b"))) == "OU=a+OU=b"
    assert fioctl_layout.go_name(name((NameOID.COMMON_NAME, "x"), (NameOID.COMMON_NAME, "y"))) == "CN=y"  # Go keeps the last CN
    assert fioctl_layout.go_name(
        name((NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "Org"), (NameOID.COMMON_NAME, "n"))
    ) == "CN=n,O=Org,C=US"
    assert fioctl_layout.go_name(name((NameOID.COMMON_NAME, " #lead+trail "))) == "CN=\\ #lead\\+trail\\ "
    assert fioctl_layout.go_name(name((NameOID.COMMON_NAME, "#x;y"))) == "CN=\\#x\\;y"  # '#' only first


def test_pretty_crl_is_fioctls_layout():
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ISSUER)
        .last_update(START)
        .next_update(datetime(2024, 1, 2, 3, 19, 5, tzinfo=UTC))
        .add_extension(x509.AuthorityKeyIdentifier(bytes(range(20)), None, None), critical=False)
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    for serial, reason in ((42, x509.ReasonFlags.privilege_withdrawn), (43, x509.ReasonFlags.certificate_hold)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(START)
            .add_extension(x509.CRLReason(reason), critical=False).build()
        )
    crl = builder.sign(KEY, hashes.SHA256())
    assert fioctl_layout.pretty_crl(crl) == (
        "Certificate Revocation List:\n"
        "\tIssuer: CN=Factory-CA,OU=acme\n"
        "\tValidity:\n"
        "\t\tNot Before: 2024-01-02 03:04:05 +0000 UTC\n"
        "\t\tNot After: 2024-01-02 03:19:05 +0000 UTC\n"
        "\tSignature Algorithm: ECDSA-SHA256\n"
        f"\tSignature: {crl.signature.hex()}\n"
        "\tRevoked Certificates:\n"
        "\t\tSerial: 42\n"
        "\t\t\tRevocation Date: 2024-01-02 03:04:05 +0000 UTC\n"
        "\t\t\tExtensions:\n"
        "\t\t\t\tx509v3 Reason Code:\n"
        "\t\t\t\t\t Revoke - 9\n"
        "\t\tSerial: 43\n"
        "\t\t\tRevocation Date: 2024-01-02 03:04:05 +0000 UTC\n"
        "\t\t\tExtensions:\n"
        "\t\t\t\tx509v3 Reason Code:\n"
        "\t\t\t\t\t Disable - 6\n"
        "\tExtensions:\n"
        "\t\tx509v3 Authority Key Id: \n"
        f"\t\t\t {bytes(range(20)).hex()}\n"
        "\t\tx509v3 CRL Number: \n"
        "\t\t\t 1\n"
    )


def test_show_layout_with_disabled_serials_and_text_around_the_blocks():
    pem = profiles.cert_pem(certificate()).decode()
    certs = {
        "root-crt": pem, "tls-crt": pem, "ca-crt": "# online CA\n" + pem + "\n" + pem + "trailing note\n",
        "disabled-ca-serials": ["123456789"],
        "change-meta": {"created-at": "2024-01-02T03:04:05Z", "updated-by": "ops"},
    }
    out, err = fioctl_layout.show(certs, pretty=False, just=None)
    assert err == ""
    assert out == (
        "## Change Metadata\nCreated at: 2024-01-02T03:04:05Z\nUpdated by: ops\n"
        f"## Factory root certificate\n{pem}\n## Server TLS Certificate\n{pem}\n"
        f"\n## Device Authentication Certificate(s)\n{certs['ca-crt']}\n"  # the server's text, as fioctl prints it
        "\n## Disabled Device Authentication Certificate Serial(s)\n -  123456789\n"
    )
    just, note = fioctl_layout.show(certs, pretty=False, just="device-cas")
    assert just == pem + "\n" + pem + "\n"  # only the PEM blocks; the notes around them are gone
    assert profiles.load_cert_bundle(just, "cas.pem")  # what `update` reads back
    assert note == "## Disabled Device Authentication Certificate Serial(s)\n -  123456789\n"
    empty, _ = fioctl_layout.show({"root-crt": None}, pretty=False, just="root")
    assert empty == "\n"  # fmt.Println("")
