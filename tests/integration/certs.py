"""Test certificates made with `cryptography`: two CAs, server and client certificates, a
revocation list. Reusable by any test that needs TLS."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NOW = datetime.datetime.now(datetime.UTC)
_START = _NOW - datetime.timedelta(days=1)
_END = _NOW + datetime.timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


class Authority:
    """A self-signed CA that issues server and client certificates and revocation lists."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hbroker test CA {name}")])
        self.certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_START).not_valid_after(_END)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        self.cert = directory / f"ca-{name}.pem"
        self.cert.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        self.revoked: list[x509.Certificate] = []

    def issue(self, file_name: str, common_name: str, *, server: bool = False,
              dns_names: tuple[str, ...] = (), emails: tuple[str, ...] = (),
              ips: tuple[str, ...] = ()) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.RFC822Name(e) for e in emails]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_START).not_valid_after(_END)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        cert = self.directory / f"{file_name}.pem"
        key_path = self.directory / f"{file_name}.key"
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return Issued(cert, key_path, certificate, key)

    def issue_server(self, file_name: str) -> Issued:
        """A server certificate for localhost and 127.0.0.1."""
        return self.issue(file_name, "localhost", server=True, dns_names=("localhost",),
                          ips=("127.0.0.1",))

    def write_crl(self, path: Path, revoked: list[Issued]) -> Path:
        """A revocation list of this CA revoking `revoked`, written to `path`."""
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(self.certificate.subject)
                   .last_update(_START).next_update(_END))
        for issued in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(issued.certificate.serial_number)
                .revocation_date(_START).build())
        crl = builder.sign(self.key, hashes.SHA256())
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path


@dataclass(frozen=True)
class PKI:
    """Everything a TLS listener test needs, under one directory."""

    ca: Authority
    other_ca: Authority            # trusted by nobody: its client certificates are refused
    server: Issued                 # from ca: localhost, 127.0.0.1
    other_server: Issued           # from other_ca, for reload tests
    client: Issued                 # from ca: CN alice, SAN dns alice.devices.example,
                                   #          SAN email alice@example.com
    revoked_client: Issued         # from ca: CN mallory, listed in crl
    other_client: Issued           # from other_ca: CN eve
    crl: Path                      # ca's CRL revoking revoked_client
    empty_crl: Path                # ca's CRL revoking nothing


def make_pki(directory: Path) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority(directory, "main")
    other = Authority(directory, "other")
    revoked = ca.issue("mallory", "mallory")
    return PKI(
        ca=ca, other_ca=other,
        server=ca.issue_server("server"),
        other_server=other.issue_server("other-server"),
        client=ca.issue("alice", "alice", dns_names=("alice.devices.example",),
                        emails=("alice@example.com",)),
        revoked_client=revoked,
        other_client=other.issue("eve", "eve"),
        crl=ca.write_crl(directory / "crl.pem", [revoked]),
        empty_crl=ca.write_crl(directory / "crl-empty.pem", []),
    )
