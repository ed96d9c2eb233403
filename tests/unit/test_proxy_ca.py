"""Proxy mode's CA (api/proxy/ca.py): kept private, name-constrained, reused across starts; and the
CONNECT listener's answers to malformed heads (api/proxy/tunnel.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qiskit_runtime_server.api.proxy.ca import ensure_certificates, server_context
from qiskit_runtime_server.api.proxy.hosts import PROXIED_HOSTS, is_proxied, local_path
from qiskit_runtime_server.api.proxy.tunnel import ConnectProxy, _connect_target, running_proxy
from tests.conftest import free_port


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """A TLS handshake between the two contexts over memory BIOs; raises the client's error."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"srv": False, "cli": False}
    for _ in range(20):
        for name, side in (("cli", cli), ("srv", srv)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def _client(files_ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files_ca))
    return context


def test_files_are_private_and_the_ca_is_kept(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path / "proxy")
    assert stat.S_IMODE(first.directory.stat().st_mode) == 0o700
    for key in (first.ca_key, first.leaf_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ca, leaf = first.ca_cert.read_bytes(), first.leaf_cert.read_bytes()
    second = ensure_certificates(tmp_path / "proxy")
    assert second.ca_cert.read_bytes() == ca, "a restart must keep the CA users already trust"
    assert second.leaf_cert.read_bytes() != leaf
    bundle = second.bundle.read_bytes()
    assert bundle.endswith(ca) and bundle.count(b"BEGIN CERTIFICATE") > 1, "system CAs plus ours"


def test_a_ca_key_others_can_read_is_refused(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "proxy")
    files.ca_key.chmod(0o644)
    with pytest.raises(PermissionError, match="other users"):
        ensure_certificates(tmp_path / "proxy")


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o750, 0o701])
def test_an_existing_folder_others_can_enter_is_refused_before_anything_is_written(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)  # a first start into a folder made by hand (or by another user)
    with pytest.raises(PermissionError, match="other users"):
        ensure_certificates(shared)
    assert os.listdir(shared) == [], "no key may be written before the folder is refused"
    assert stat.S_IMODE(shared.stat().st_mode) == mode
    shared.chmod(0o700)
    assert ensure_certificates(shared).ca_key.exists()


def test_a_kept_ca_in_a_folder_opened_later_is_refused(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "proxy")
    leaf = files.leaf_cert.read_bytes()
    files.directory.chmod(0o777)
    with pytest.raises(PermissionError, match="other users"):
        ensure_certificates(files.directory)
    assert files.leaf_cert.read_bytes() == leaf, "nothing rewritten"


def test_a_new_folder_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        files = ensure_certificates(tmp_path / "a" / "proxy")
    finally:
        os.umask(old)
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700


def test_leaf_verifies_for_every_proxied_host(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "proxy")
    for host in PROXIED_HOSTS:
        _handshake(server_context(files), _client(files.ca_cert), host)


def test_the_ca_cannot_vouch_for_another_name(tmp_path: Path) -> None:
    """Even with its private key, a certificate for another site fails verification (name constraints)."""
    files = ensure_certificates(tmp_path / "proxy")
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    constraints = ca_cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    rogue = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pypi.org")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("pypi.org")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = tmp_path / "rogue.pem"
    chain.write_bytes(rogue.public_bytes(serialization.Encoding.PEM))
    rogue_key = tmp_path / "rogue-key.pem"
    rogue_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain, rogue_key)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)name constraint|permitted"):
        _handshake(server, _client(files.ca_cert), "pypi.org")


def test_only_ibm_api_hosts_on_443_are_proxied() -> None:
    assert is_proxied("IAM.cloud.ibm.com", 443)
    assert is_proxied("us-east.quantum-computing.cloud.ibm.com", 443)
    assert not is_proxied("iam.cloud.ibm.com", 80)
    assert not is_proxied("cloud.ibm.com", 443)
    assert not is_proxied("evil.iam.cloud.ibm.com", 443)
    assert not is_proxied("pypi.org", 443)


def test_catalog_paths_move_under_catalog_and_others_stay() -> None:
    assert local_path("globalcatalog.cloud.ibm.com", "/api/v1/plan-1") == "/catalog/plan-1"
    assert local_path("globalcatalog.cloud.ibm.com:443", "/api/v1/plan-1") == "/catalog/plan-1"
    assert local_path("quantum.cloud.ibm.com", "/api/v1/jobs") == "/api/v1/jobs"
    assert local_path("iam.cloud.ibm.com", "/identity/token") == "/identity/token"


def test_connect_ports_must_be_ascii_digits() -> None:
    assert _connect_target(b"CONNECT iam.cloud.ibm.com:443 HTTP/1.1\r\n\r\n") == ("iam.cloud.ibm.com", 443)
    assert _connect_target(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n") == ("::1", 443)
    for port in (b"\xb2", b"\xb9\xb2\xb3", "\u0664\u0664\u0663".encode(), b"4" * 6000, b"", b"-1", b"+443"):
        assert _connect_target(b"CONNECT iam.cloud.ibm.com:" + port + b" HTTP/1.1\r\n\r\n") is None, port


async def test_a_non_ascii_connect_port_is_answered_405_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = ensure_certificates(tmp_path / "proxy")
    proxy = ConnectProxy("127.0.0.1", free_port(), ("127.0.0.1", 1), server_context(files))
    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: loop_errors.append(context))
    caplog.set_level(logging.DEBUG)
    async with running_proxy(proxy):
        for head in (
            b"CONNECT iam.cloud.ibm.com:\xb2 HTTP/1.1\r\n\r\n",
            b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(head)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(1024), 5)
            writer.close()
            if b"\xb2" in head:
                assert answer.startswith(b"HTTP/1.1 405 "), answer
            else:  # the listener still answers after it
                assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert not loop_errors and "Traceback" not in caplog.text and "ValueError" not in caplog.text
