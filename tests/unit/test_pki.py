"""The lab's PKI (runtime/pki.py): a CA and an API server certificate it signs, made with
the openssl command, checked here with openssl itself and with Python's TLS stack."""
import os
import shutil
import ssl
import subprocess

import pytest

from netlab.runtime import pki

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setattr(pki, "pki_dir", lambda lab: tmp_path / "pki")
    monkeypatch.setattr(pki, "paths", lambda lab: {
        "ca": tmp_path / "pki/ca.crt", "ca_key": tmp_path / "pki/ca.key", "cert": tmp_path / "pki/apiserver.crt",
        "key": tmp_path / "pki/apiserver.key", "token": tmp_path / "pki/token"})
    return pki.ensure("demo", ["127.0.0.1", "10.96.0.1", "192.168.56.11"], ["kubernetes", "kubernetes.default.svc"])


def _text(cert) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout


def test_the_ca_signs_a_server_certificate_for_every_name(files):
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(files["ca"]), str(files["cert"])],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    text = _text(files["cert"])
    assert "Issuer: CN = netlab-demo-ca" in text and "Subject: CN = kube-apiserver" in text
    for name in ("IP Address:127.0.0.1", "IP Address:10.96.0.1", "IP Address:192.168.56.11",
                 "DNS:kubernetes", "DNS:kubernetes.default.svc"):
        assert name in text
    assert "CA:FALSE" in text and "TLS Web Server Authentication" in text
    assert "CA:TRUE" in _text(files["ca"])


def test_keys_and_token_are_owner_only_and_python_tls_loads_them(files):
    for key in ("ca_key", "key", "token"):
        assert os.stat(files[key]).st_mode & 0o077 == 0, key
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(files["cert"]), str(files["key"]))
    assert len(files["token"].read_text().strip()) == 64


def test_made_once(files):
    before = files["cert"].read_bytes()
    again = pki.ensure("demo", ["127.0.0.1"], [])
    assert again["cert"].read_bytes() == before
