"""Where a lab's kubectl listener says where it is (light: the CLI imports it)."""
from __future__ import annotations

import os
import socket

from .. import state


def kubeconfig_path(lab: str):
    return state.lab_dir(lab) / "kubeconfig"


def endpoint_file(lab: str):
    return state.lab_dir(lab) / "kubeapi.json"


def listening(lab: str) -> bool:
    """The kubeconfig exists and its port on 127.0.0.1 accepts connections."""
    info = state.read_json(endpoint_file(lab)) if endpoint_file(lab).exists() else None
    if not info or not os.path.exists(kubeconfig_path(lab)):
        return False
    sock = socket.socket()
    sock.settimeout(0.5)
    try:
        sock.connect(("127.0.0.1", int(info["port"])))
        return True
    except OSError:
        return False
    finally:
        sock.close()
