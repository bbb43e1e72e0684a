"""Rollouts of a running lab's Deployments, DaemonSets and StatefulSets, as a library (the CLI's
`netlab rollout` and the pytest plugin use it): clients of the lab's agent, whose controllers
do the rolling."""
from __future__ import annotations

import time
from typing import Callable, Optional
from urllib.parse import quote

from .model.errors import LabError


def rollout_state(lab: str, res: str, name: str, namespace: str = "default") -> dict:
    """{"done": bool, "message": kubectl's words, "history": [revisions]} for deployments,
    daemonsets or statefulsets (res)."""
    from .runtime import agent_client
    return agent_client.call(lab, "GET", f"/apis/netlab.io/v1/namespaces/{quote(namespace, safe='')}/{res}/"
                                         f"{quote(name, safe='')}/rollout")


def wait_rollout(lab: str, res: str, name: str, namespace: str = "default", timeout: float = 120.0,
                 say: Optional[Callable[[str], None]] = None) -> str:
    """Until the rollout is complete, as `kubectl rollout status`; LabError on timeout."""
    deadline, last = time.monotonic() + timeout, ""
    while True:
        st = rollout_state(lab, res, name, namespace)
        if st["message"] != last and say:
            say(st["message"])
        last = st["message"]
        if st["done"]:
            return last
        if time.monotonic() > deadline:
            raise LabError(f"timed out waiting for the condition ({last})")
        time.sleep(0.2)
