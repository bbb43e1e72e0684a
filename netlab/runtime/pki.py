"""A lab's own certificate authority, the API server's certificate and kubectl's token.

Made once per lab with the openssl command (Debian's openssl package), in
/run/netlab/<lab>/pki/ (0700; keys and token 0600): a CA, and a server certificate it signs
for every name the lab's API answers on: 127.0.0.1 (the loopback listener kubectl uses), the
`kubernetes` Service's address (10.96.0.1) and DNS names, and the nodes' addresses (its
endpoints). Gone with the lab (`netlab down` removes the lab's directory).
"""
from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
from pathlib import Path
from typing import Sequence

from .. import state


def pki_dir(lab: str) -> Path:
    return state.lab_dir(lab) / "pki"


def paths(lab: str) -> dict[str, Path]:
    d = pki_dir(lab)
    return {"ca": d / "ca.crt", "ca_key": d / "ca.key", "cert": d / "apiserver.crt",
            "key": d / "apiserver.key", "token": d / "token"}


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"openssl {args[0]} failed: {result.stderr.strip()[-300:]}")


def ensure(lab: str, ips: Sequence[str], dns_names: Sequence[str]) -> dict[str, Path]:
    """The lab's PKI files, made now if missing (several processes may ask at once: one makes)."""
    d = pki_dir(lab)
    os.makedirs(d, mode=0o700, exist_ok=True)
    p = paths(lab)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(p[k].exists() for k in ("ca", "cert", "key", "token")):
            return p
        old = os.umask(0o077)
        try:
            # Two openssl runs (OpenSSL 3's `req -x509 -newkey`, and its -CA to sign): each
            # run costs about 8 ms of CPU, and the five of a key, CSR and sign apiece were
            # a part of `up`'s time.
            ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
            if not p["ca"].exists():
                _openssl("req", "-x509", *ec, "-keyout", str(p["ca_key"]), "-out", str(p["ca"]),
                         "-subj", f"/CN=netlab-{lab}-ca", "-days", "3650",
                         "-addext", "basicConstraints=critical,CA:TRUE",
                         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
            sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{n}" for n in dns_names]
            _openssl("req", "-x509", *ec, "-keyout", str(p["key"]), "-out", str(p["cert"]),
                     "-subj", "/CN=kube-apiserver", "-CA", str(p["ca"]), "-CAkey", str(p["ca_key"]),
                     "-set_serial", str(secrets.randbits(63)), "-days", "3650",
                     "-addext", f"subjectAltName={','.join(sans)}",
                     "-addext", "basicConstraints=critical,CA:FALSE",
                     "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
                     "-addext", "extendedKeyUsage=serverAuth")
            if not p["token"].exists():
                p["token"].write_text(secrets.token_hex(32) + "\n")
        finally:
            os.umask(old)
        return p
