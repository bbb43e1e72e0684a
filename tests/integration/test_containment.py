"""Pods are contained: a malicious manifest cannot change the host (issue 9).

A pod's container runs a shell script that tries what a hostile lab would: plant a .pth in
netlab's own virtual environment (the next `netlab` would run it), write /etc, /run and the
host's /tmp, read /etc/shadow, mount, remount / read-write (also from a user namespace),
write sysctls and /sys, make a device node. The host must be unchanged afterwards, while the
pod's own /tmp works.
"""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest

from netlab import engine, state

pytestmark = pytest.mark.root

LAB = """
apiVersion: netlab/v1
kind: Lab
metadata: {name: ignored}
spec: {nodes: 1, dns: false}
---
"""

ATTACK = r"""
echo "uid=$(id -u)"
echo pwned > "$PTH" && echo PTH-WRITTEN
echo pwned > /etc/netlab-pwned && echo ETC-WRITTEN
cat /etc/shadow > /dev/null && echo SHADOW-READ
touch "/run/netlab-pwned-$MARK"   # the pod's own /run: allowed, the host's must stay clean
ls /run/netlab >/dev/null 2>&1 && echo HOST-RUN-VISIBLE
echo hosts >> /etc/hosts && echo HOSTS-WRITTEN
mount -t tmpfs none /mnt && echo MOUNTED
mount -o remount,rw / && touch /etc/netlab-pwned && echo REMOUNTED
unshare -rm sh -c 'mount -o remount,rw / && touch /etc/netlab-pwned && echo USERNS-REMOUNTED' 2>&1
hostname evil-host && echo HOSTNAME-CHANGED
v=$(cat /proc/sys/vm/swappiness); echo "$v" > /proc/sys/vm/swappiness && echo SYSCTL-WRITTEN
echo 1500 > /sys/class/net/lo/mtu && echo SYSFS-WRITTEN
echo h > /proc/sysrq-trigger && echo SYSRQ-WRITTEN
mknod /tmp/kmem c 1 2 && head -c 1 /tmp/kmem > /dev/null && echo KMEM-READ
echo "own-tmp-ok-$MARK" > "/tmp/netlab-pwned-$MARK" && cat "/tmp/netlab-pwned-$MARK"
echo ATTACK-DONE
exec sleep 3600
"""

ATTACKER = LAB + """
apiVersion: v1
kind: Pod
metadata: {name: evil}
spec:
  containers:
  - name: attacker
    image: busybox
    command: [sh, -c, %(script)s]
    env: [{name: PTH, value: %(pth)s}, {name: MARK, value: %(mark)s}]
"""

# What must never appear in the attacker's log: each one means an attack worked.
BREACHES = ("PTH-WRITTEN", "ETC-WRITTEN", "SHADOW-READ", "HOST-RUN-VISIBLE",
            "HOSTS-WRITTEN", "MOUNTED", "REMOUNTED", "USERNS-REMOUNTED", "HOSTNAME-CHANGED",
            "SYSCTL-WRITTEN", "SYSFS-WRITTEN", "SYSRQ-WRITTEN", "KMEM-READ")

# Docker's default capability set, as bits of /proc/PID/status's Cap* masks.
DOCKER_DEFAULT = sum(1 << c for c in (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31))


def quoted(text: str) -> str:
    import json
    return json.dumps(text)


def digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return "absent"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def log_of(lab: str, pod: str, container: str) -> str:
    try:
        return state.container_log(lab, "default", pod, container).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def container_pid(lab: str, pod: str, name: str) -> int:
    st = engine.pod_status(lab)[f"default/{pod}"]
    return next(c["pid"] for c in st["containers"] if c["name"] == name)


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def test_a_malicious_pod_cannot_change_the_host(make_lab, lab_name):
    pth = os.path.join(sysconfig.get_paths()["purelib"], f"netlab-pwned-{lab_name}.pth")
    planted = [pth, "/etc/netlab-pwned", f"/run/netlab-pwned-{lab_name}", f"/tmp/netlab-pwned-{lab_name}",
               "/tmp/kmem"]
    watched = ["/etc/passwd", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/proc/sys/vm/swappiness"]
    before = {p: digest(p) for p in watched}
    hostname = socket.gethostname()
    assert not any(os.path.exists(p) for p in planted)

    cluster = make_lab(manifests=ATTACKER % {"script": quoted(ATTACK), "pth": quoted(pth),
                                             "mark": quoted(lab_name)})
    log = wait_for(lambda: "ATTACK-DONE" in log_of(cluster.name, "evil", "attacker")
                   and log_of(cluster.name, "evil", "attacker"), 20, "the attack script to finish")
    print(log)

    breached = [b for b in BREACHES if b in log.split()]
    assert not breached, f"attacks that worked: {breached}\n{log}"
    assert f"own-tmp-ok-{lab_name}" in log          # the pod's own /tmp is writable
    assert "uid=0" in log
    leftovers = [p for p in planted if os.path.exists(p)]
    assert not leftovers, f"the pod changed the host: {leftovers}"
    assert {p: digest(p) for p in watched} == before
    assert socket.gethostname() == hostname

    # The running container: root with Docker's default capabilities and no_new_privs.
    pid = container_pid(cluster.name, "evil", "attacker")
    st = proc_status(pid)
    assert int(st["CapBnd"], 16) == DOCKER_DEFAULT
    assert int(st["CapEff"], 16) == DOCKER_DEFAULT
    assert int(st["CapInh"], 16) == 0
    assert st["NoNewPrivs"] == "1"
    # The holder (pause) keeps no capability at all.
    holder = engine.pod_status(cluster.name)["default/evil"]["holderPid"]
    assert int(proc_status(holder)["CapBnd"], 16) == 0
    assert int(proc_status(holder)["CapEff"], 16) == 0
    # The pod's /tmp file is in the pod, not on the host: read it through the pod's mounts.
    seen = subprocess.run(["nsenter", f"--target={holder}", "--mount", "cat", f"/tmp/netlab-pwned-{lab_name}"],
                          capture_output=True, text=True)
    assert seen.stdout.strip() == f"own-tmp-ok-{lab_name}"

    # What `netlab exec` and exec probes should run (pods.enter_argv): the container's
    # capabilities, and the pod's root as the working directory, not the host's.
    from netlab.runtime.pods import enter_argv
    probe = subprocess.run(enter_argv(holder, ["sh", "-c", "mount -o remount,rw /etc && echo ESCAPED; "
                                               "ls -d ./run/netns 2>/dev/null && echo HOST-ROOT; echo EXEC-OK"]),
                           capture_output=True, text=True)
    assert "EXEC-OK" in probe.stdout and "ESCAPED" not in probe.stdout and "HOST-ROOT" not in probe.stdout


USERS = LAB + """
apiVersion: v1
kind: Pod
metadata: {name: users}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000]}
  containers:
  - name: pod-level
    image: busybox
    command: [sh, -c, "touch /tmp/mine && ls -n /tmp/mine; exec sleep 3600"]
  - name: own-level
    image: busybox
    command: [sleep, "3600"]
    securityContext: {runAsUser: 2000, capabilities: {drop: [ALL]}}
  - name: root-net-admin
    image: busybox
    command: [sleep, "3600"]
    securityContext: {runAsUser: 0, capabilities: {add: [NET_ADMIN], drop: [NET_RAW]}}
"""


def test_run_as_user_and_capabilities(make_lab):
    cluster = make_lab(manifests=USERS)
    lab = cluster.name
    wait_for(lambda: "mine" in log_of(lab, "users", "pod-level"), 20, "the pod-level container")
    st = proc_status(container_pid(lab, "users", "pod-level"))
    assert st["Uid"].split() == ["1000"] * 4 and st["Gid"].split() == ["3000"] * 4
    assert st["Groups"].split() == ["4000"]
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0   # non-root: none, as in Docker
    assert " 1000 3000 " in log_of(lab, "users", "pod-level")           # its file, its owner
    st = proc_status(container_pid(lab, "users", "own-level"))
    assert st["Uid"].split()[0] == "2000" and st["Gid"].split()[0] == "3000"
    assert int(st["CapBnd"], 16) == 0
    st = proc_status(container_pid(lab, "users", "root-net-admin"))
    assert st["Uid"].split()[0] == "0"
    eff = int(st["CapEff"], 16)
    assert eff & (1 << 12) and not eff & (1 << 13) and not eff & (1 << 21)   # NET_ADMIN, no NET_RAW, no SYS_ADMIN


SHARED = LAB + """
apiVersion: v1
kind: Pod
metadata: {name: shared}
spec:
  volumes: [{name: scratch, emptyDir: {sizeLimit: 16Mi}}]
  containers:
  - name: writer
    image: busybox
    command: [sh, -c, "echo hello-from-writer > /data/msg && echo WROTE; exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /data}]
  - name: reader
    image: busybox
    command: [sh, -c, "while [ ! -f /in/msg ]; do sleep 0.1; done; cat /in/msg; touch /in/x || echo READ-ONLY; exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /in, readOnly: true}]
"""


def test_emptydir_shared_by_two_containers(make_lab):
    cluster = make_lab(manifests=SHARED)
    lab = cluster.name
    log = wait_for(lambda: "READ-ONLY" in log_of(lab, "shared", "reader") and log_of(lab, "shared", "reader"),
                   20, "the reader to see the writer's file")
    assert "hello-from-writer" in log
    assert "WROTE" in log_of(lab, "shared", "writer")
    # Neither /data nor /in exists on the host: the pod's root made their mount points.
    assert not os.path.exists("/data/msg") and not os.path.exists("/in")
    holder = engine.pod_status(lab)["default/shared"]["holderPid"]
    seen = subprocess.run(["nsenter", f"--target={holder}", "--mount", "cat", "/data/msg"],
                          capture_output=True, text=True)
    assert seen.stdout.strip() == "hello-from-writer"


def test_netlab_exec_is_confined_like_the_container(make_lab):
    """`netlab exec` runs with the container's capabilities and user, not all of root's: it
    cannot remount the host's read-only filesystem from inside the pod."""
    import sys
    cluster = make_lab(manifests=USERS)
    lab = cluster.name
    wait_for(lambda: "mine" in log_of(lab, "users", "pod-level"), 20, "the pod-level container")
    marker = Path("/etc/netlab-exec-escape")
    script = ("mount -o remount,rw /etc && touch /etc/netlab-exec-escape && echo ESCAPED; "
              "grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    for container, uid, caps in (("root-net-admin", "0", DOCKER_DEFAULT & ~(1 << 13) | (1 << 12)),
                                 ("own-level", "2000", 0)):
        proc = subprocess.run([sys.executable, "-m", "netlab", "exec", "users", "-c", container, "--lab", lab,
                               "--", "sh", "-c", script], capture_output=True, text=True, timeout=30)
        status = dict(line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
        assert "ESCAPED" not in proc.stdout and not marker.exists()
        assert status["Uid"].split()[0] == uid
        assert int(status["CapBnd"], 16) == caps and status["NoNewPrivs"].strip() == "1"


BAD_VOLUME = """
apiVersion: v1
kind: Pod
metadata: {name: badvol}
spec:
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    volumeMounts: [{name: scratch, mountPath: /usr/netlab-no-such-dir}]
"""


def test_a_failed_sandbox_says_why_in_its_pod_log(make_lab):
    """The POD log is made only when the sandbox has something to say: a pod whose volume
    cannot be mounted (its mountPath would have to be made in the host's read-only /usr)
    gets a POD log with the reason; a healthy pod gets none."""
    import yaml
    from netlab.model.objects import parse_object
    cluster = make_lab(manifests=SHARED)
    lab = cluster.name
    assert not state.container_log(lab, "default", "shared", "POD").exists()
    assert engine.apply(lab, [parse_object(yaml.safe_load(BAD_VOLUME), "badvol.yaml")]) == ["pod/badvol created"]
    log = wait_for(lambda: log_of(lab, "badvol", "POD"), 20, "the POD log of the failed sandbox")
    assert "netlab: pod sandbox:" in log
    assert "volume scratch: cannot create mountPath /usr/netlab-no-such-dir" in log
    assert not os.path.exists("/usr/netlab-no-such-dir")
