"""Where a lab's state lives on the machine: /run/netlab/<lab>/ (tmpfs: gone after reboot,
like the namespaces it describes)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

STATE_ROOT = Path(os.environ.get("NETLAB_STATE_DIR", "/run/netlab"))
ETC_NETNS = Path("/etc/netns")
LAB_ENV = "NETLAB_LAB"     # set in the agent's environment: the mark `clean` finds it by


def lab_dir(lab: str) -> Path:
    return STATE_ROOT / lab


def state_file(lab: str) -> Path:
    return lab_dir(lab) / "state.json"


def status_file(lab: str) -> Path:
    return lab_dir(lab) / "status.json"


def agent_socket(lab: str) -> Path:
    return lab_dir(lab) / "agent.sock"


def agent_pidfile(lab: str) -> Path:
    return lab_dir(lab) / "agent.pid"


def log_dir(lab: str) -> Path:
    return lab_dir(lab) / "logs"


def container_log(lab: str, namespace: str, pod: str, container: str) -> Path:
    return log_dir(lab) / f"{namespace}_{pod}_{container}.log"


def write_json(path: Path, data: Any, compact: bool = False) -> None:
    """Atomic: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        if compact:           # written many times a second: no pretty-printing
            json.dump(data, f, separators=(",", ":"))
        else:
            json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def labs_with_state() -> list[str]:
    try:
        return sorted(p.name for p in STATE_ROOT.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def remove_lab_dir(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)
