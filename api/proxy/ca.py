"""The proxy's certificate authority and its one leaf certificate, kept in ``QRS_PROXY_DIR``.

The CA is generated once and kept (so a ``REQUESTS_CA_BUNDLE`` set in a shell stays valid
across restarts); its key file is ``0600`` in a ``0700`` folder. A folder that already exists
must be this user's and closed to others before anything is written into it (another user who
can list or write it could read the key, or plant files in it). It carries critical X.509
name constraints that permit only :data:`~.hosts.PROXIED_HOSTS`, so a verifier refuses
anything it signs for another name, even if the key leaked. The leaf certificate, which
names exactly those hosts, is issued afresh at every start. All the cryptography is
``cryptography``'s (EC P-256, SHA-256).
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qiskit_runtime_server.api.proxy.hosts import PROXIED_HOSTS

CA_NAME = "qiskit-runtime-server local proxy CA"
CA_YEARS = 10
LEAF_DAYS = 90
# Debian/Ubuntu, Fedora/RHEL, Alpine/openSUSE locations of the system's trusted CAs.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
)


class ProxyFiles(msgspec.Struct, frozen=True):
    """Paths of the proxy's files: the CA certificate, the leaf pair (its chain), and the client bundle.

    ``bundle`` is the file for ``REQUESTS_CA_BUNDLE``: the system CAs followed by ours, so
    the same shell still reaches every other HTTPS site ``requests`` is used for.
    """

    directory: Path
    ca_cert: Path
    ca_key: Path
    leaf_cert: Path
    leaf_key: Path
    bundle: Path


def default_proxy_dir() -> Path:
    """``$XDG_DATA_HOME/qiskit-runtime-server/proxy`` (``~/.local/share/...`` without it)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "qiskit-runtime-server" / "proxy"


def ensure_certificates(directory: Path, hosts: tuple[str, ...] = PROXIED_HOSTS) -> ProxyFiles:
    """Create (or reuse) the CA in ``directory``, issue a fresh leaf for ``hosts``, write the bundle.

    Raises:
        PermissionError: ``directory`` (new or kept) is accessible by other users or owned by
            another user, or the CA key is readable by others (refused rather than used, before
            anything is written: whoever reads that key can impersonate IBM's hosts to this user).
        ValueError: the kept CA does not permit one of ``hosts`` (made by another version).
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _require_private_dir(directory)
    files = ProxyFiles(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        leaf_cert=directory / "leaf.pem",
        leaf_key=directory / "leaf-key.pem",
        bundle=directory / "ca-bundle.pem",
    )
    if files.ca_key.exists() and files.ca_cert.exists():
        _require_private(files.ca_key)
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{files.ca_key} is not an EC key")
        _require_permits(ca_cert, hosts)
    else:
        ca_key, ca_cert = _new_ca(hosts)
        _write_private(files.ca_key, _pem_key(ca_key))
        files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaf_key, leaf_cert = _new_leaf(ca_key, ca_cert, hosts)
    _write_private(files.leaf_key, _pem_key(leaf_key))
    # The leaf file carries its chain (leaf, then CA), as the TLS server presents it.
    files.leaf_cert.write_bytes(
        leaf_cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    files.bundle.write_bytes(_system_bundle() + ca_cert.public_bytes(serialization.Encoding.PEM))
    return files


def server_context(files: ProxyFiles) -> ssl.SSLContext:
    """The TLS server context that presents the leaf (and the CA as its chain), TLS 1.2+."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.leaf_cert, files.leaf_key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _new_ca(hosts: tuple[str, ...]) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(signs_certificates=True),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(permitted_subtrees=[x509.DNSName(h) for h in hosts], excluded_subtrees=None),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _new_leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hosts: tuple[str, ...]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(signs_certificates=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs); the leaf only signs its TLS handshakes."""
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _require_permits(ca_cert: x509.Certificate, hosts: tuple[str, ...]) -> None:
    constraints = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    permitted = {name.value for name in constraints.permitted_subtrees or [] if isinstance(name, x509.DNSName)}
    missing = [h for h in hosts if h not in permitted]
    if missing:
        raise ValueError(f"the kept proxy CA does not permit {missing}; remove its folder to make a new one")


def _require_private_dir(directory: Path) -> None:
    """Refuse a folder that other users may enter or write, or that is not this user's."""
    info = directory.stat()
    if info.st_mode & 0o077:
        raise PermissionError(
            f"{directory} is accessible by other users (mode {info.st_mode & 0o777:o}); nothing was written. "
            "chmod 700 it, or point QRS_PROXY_DIR at a new folder (it is created private)"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{directory} belongs to another user; point QRS_PROXY_DIR at a folder of your own")


def _require_private(path: Path) -> None:
    for item in (path, path.parent):
        if item.stat().st_mode & 0o077:
            raise PermissionError(f"{item} is accessible by other users; chmod go-rwx it (it holds the proxy CA key)")


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _system_bundle() -> bytes:
    """The system's trusted CAs as PEM (``ssl``'s default file, else a known location, else certifi)."""
    candidates = [ssl.get_default_verify_paths().cafile, *SYSTEM_BUNDLES]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            data = Path(candidate).read_bytes()
            return data if data.endswith(b"\n") else data + b"\n"
    try:
        import certifi
    except ImportError:
        return b""
    return Path(certifi.where()).read_bytes()
