"""TLS in the server itself (issue 34, item 5): `serve --tls-cert --tls-key` speaks HTTPS only, sends HSTS, and
names https in its discovery; a certificate made at test time with `cryptography`.

https://www.rfc-editor.org/rfc/rfc6797
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.tls import check_tls
from tests.conftest import free_port

ROOT = Path(__file__).parent.parent.parent


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "careloop test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_settings_are_both_or_neither(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    assert check_tls(None, None) is False
    assert check_tls(str(cert), str(key)) is True
    for pair in ((str(cert), None), (None, str(key)), (str(cert), str(tmp_path / "missing.pem"))):
        with pytest.raises(SystemExit):
            check_tls(*pair)


def test_serve_with_tls_answers_https_only_with_hsts(tmp_path: Path, seeded_database: Path) -> None:
    cert, key = self_signed(tmp_path)
    db = tmp_path / "fhir.db"
    shutil.copyfile(seeded_database, db)
    port = free_port()
    env = {**os.environ, "CARELOOP_LOG_LEVEL": "warning", "CARELOOP_VALIDATION_WORKERS": "0"}
    env.pop("CARELOOP_BASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--db", str(db),
                                "--tls-cert", str(cert), "--tls-key", str(key)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL)
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=5) as client:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, "the server exited"
                try:
                    answer = client.get(f"https://127.0.0.1:{port}/fhir/metadata")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.3)
            assert answer.status_code == 200
            assert answer.headers["strict-transport-security"] == "max-age=31536000"
            smart = client.get(f"https://127.0.0.1:{port}/fhir/.well-known/smart-configuration").json()
            assert smart["token_endpoint"].startswith("https://")
            assert client.get(f"https://127.0.0.1:{port}/healthz").headers["strict-transport-security"]
        with pytest.raises(httpx.TransportError):  # the port speaks TLS only
            httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=5)
        with pytest.raises(httpx.ConnectError):  # and a client that does not trust the certificate refuses it
            httpx.get(f"https://127.0.0.1:{port}/fhir/metadata", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)
