"""Where a lab's state lives on the machine: /run/netlab/<lab>/ (tmpfs: gone after reboot,
like the namespaces it describes).

The state root and each lab directory are 0700 and every file netlab writes is 0600: status.json
holds containers' environments. A state root that another user owns, or that others may
write to, is refused: whoever can write there could plant a lab for netlab to act on.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from .model.errors import StateError

STATE_ROOT = Path(os.environ.get("NETLAB_STATE_DIR", "/run/netlab"))
ETC_NETNS = Path("/etc/netns")
LAB_ENV = "NETLAB_LAB"     # set in the agent's environment: the mark `clean` finds it by
FAILED = ".failed"         # STATE_ROOT/.failed/<lab>-<time>/: the logs of failed `up`s
KEEP_FAILED = 5            # how many failed `up`s' logs are kept


class UntrustedStateDir(StateError):
    """The state root is not safe to use; the message says why in one line."""


def lab_dir(lab: str) -> Path:
    return STATE_ROOT / lab


def state_file(lab: str) -> Path:
    return lab_dir(lab) / "state.json"


def status_file(lab: str) -> Path:
    return lab_dir(lab) / "status.json"


def owner_file(lab: str) -> Path:
    return lab_dir(lab) / "owner.json"


def agent_socket(lab: str) -> Path:
    return lab_dir(lab) / "agent.sock"


def agent_pidfile(lab: str) -> Path:
    return lab_dir(lab) / "agent.pid"


def agent_log(lab: str) -> Path:
    return lab_dir(lab) / "agent.log"


def log_dir(lab: str) -> Path:
    return lab_dir(lab) / "logs"


def container_log(lab: str, namespace: str, pod: str, container: str) -> Path:
    return log_dir(lab) / f"{namespace}_{pod}_{container}.log"


# ---------------------------------------------------------------------- trust and ownership


def check_root(create: bool = False) -> None:
    """Refuse a state root owned by another user, writable by group or others, or a symlink;
    tighten our own to 0700. With create, make it (0700) when it is missing."""
    if create:
        STATE_ROOT.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(STATE_ROOT, 0o700)
        except FileExistsError:
            pass
    try:
        st = os.lstat(STATE_ROOT)
    except FileNotFoundError:
        return
    where = f"netlab state directory {STATE_ROOT}"
    if stat.S_ISLNK(st.st_mode):
        raise UntrustedStateDir(f"{where} is a symbolic link: refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedStateDir(f"{where} is not a directory")
    if st.st_uid != os.geteuid():
        raise UntrustedStateDir(f"{where} is owned by uid {st.st_uid}, not by this user "
                                f"(uid {os.geteuid()}): refusing to trust it")
    if st.st_mode & 0o022:
        raise UntrustedStateDir(f"{where} is writable by group or others "
                                f"(mode {stat.S_IMODE(st.st_mode):04o}): refusing to trust it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(STATE_ROOT, 0o700)


def claim_lab(lab: str) -> dict:
    """Claim a lab's name atomically (one mkdir: two `up`s of one name cannot both win) and
    record its owner: a fresh lab id, the mark netlab puts on everything the lab creates.
    Raises FileExistsError for the loser."""
    check_root(create=True)
    os.mkdir(lab_dir(lab), 0o700)
    os.chmod(lab_dir(lab), 0o700)
    owner = {"lab": lab, "id": uuid.uuid4().hex, "created": time.time(), "pid": os.getpid()}
    write_json(owner_file(lab), owner)
    os.mkdir(log_dir(lab), 0o700)
    return owner


def lab_id(lab: str) -> Optional[str]:
    """The id recorded when the lab was claimed, or None."""
    try:
        owner = read_json(owner_file(lab))
    except (OSError, ValueError):
        return None
    return owner.get("id") if isinstance(owner, dict) else None


# ---------------------------------------------------------------------- files


def write_json(path: Path, data: Any, compact: bool = False) -> None:
    """Atomic: readers see the old file or the new one, never half of one. Mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as f:
        if compact:           # written many times a second: no pretty-printing, and dumps(),
            # whose C encoder is six times faster than dump()'s streaming Python one.
            f.write(json.dumps(data, separators=(",", ":")))
        else:
            f.write(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def labs_with_state() -> list[str]:
    # A lab name is a DNS label: a name starting with a dot (.failed) is netlab's own.
    try:
        return sorted(p.name for p in STATE_ROOT.iterdir() if p.is_dir() and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def remove_lab_dir(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)


def keep_failure(lab: str) -> Optional[Path]:
    """Move a failed lab's logs (container logs, agent.log, status.json) out of its directory
    before the rollback removes it: to STATE_ROOT/.failed/<lab>-<time>/ (0700). Only the last
    KEEP_FAILED are kept. Returns that directory, or None if there was nothing to keep."""
    src = lab_dir(lab)
    pieces = [p for p in (log_dir(lab), agent_log(lab), status_file(lab), state_file(lab)) if p.exists()]
    if not pieces:
        return None
    root = STATE_ROOT / FAILED
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    os.chmod(root, 0o700)
    dest = root / f"{lab}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    os.mkdir(dest, 0o700)
    for piece in pieces:
        try:
            os.replace(piece, dest / piece.relative_to(src))
        except OSError:
            pass
    kept = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in kept[:-KEEP_FAILED]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def tail(path: Path, lines: int = 10) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]
