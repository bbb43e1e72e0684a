"""What a pod may do to the machine: its user, its capabilities, its volumes. Pure parsing.

A pod's processes run on the host's own filesystem, mounted read-only in the pod's mount
namespace (runtime/pods.py), with Docker's default capability set. This module reads the
parts of a pod spec that change that: `securityContext` (pod and container level: runAsUser,
runAsGroup, runAsNonRoot, supplementalGroups, fsGroup, capabilities add/drop), `volumes`
(emptyDir only, a per-pod tmpfs) and each container's `volumeMounts`.

What would reach into the host is refused with one line naming the file, object and field:
hostPath volumes, privileged containers, and capabilities that act outside the pod's own
namespaces (SYS_ADMIN, SYS_MODULE, SYS_TIME, ...).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import InvalidError

# Linux capability numbers (include/uapi/linux/capability.h).
CAPABILITIES = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

# Docker's (and containerd's) default set for a container.
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")

# What `capabilities.add` may ask for on top: each acts only inside the pod's own namespaces
# or on its own processes. Everything else (SYS_ADMIN, SYS_MODULE, SYS_TIME, SYS_PTRACE,
# DAC_READ_SEARCH, ...) would let a pod reach the host, and is refused.
ADDABLE_CAPS = ("NET_ADMIN", "NET_BROADCAST", "IPC_LOCK", "IPC_OWNER", "SYS_NICE", "SYS_RESOURCE",
                "LEASE")

EMPTYDIR_DEFAULT_SIZE = 256 << 20    # bytes of memory an emptyDir may hold without a sizeLimit

_VOLUME_TYPES_HINT = ("configMap, secret, persistentVolumeClaim and the others are not implemented; "
                      "a projected volume is accepted but stays empty")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E|m)?$")
_SUFFIX = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50,
           "Ei": 1 << 60, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
           "E": 10**18, "m": 0.001}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Volume:
    name: str
    size: int = EMPTYDIR_DEFAULT_SIZE     # bytes: the tmpfs size
    # A `projected` volume (the service-account token volume every exported pod carries):
    # accepted so that such a manifest loads, mounted as an empty read-only directory.
    projected: bool = False


@dataclass(frozen=True)
class VolumeMount:
    volume: str
    path: str                   # absolute, normalised
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True)
class ContainerSecurity:
    run_as_user: Optional[int] = None
    run_as_group: Optional[int] = None
    run_as_non_root: bool = False
    groups: tuple[int, ...] = ()            # supplementalGroups and fsGroup
    caps: frozenset[int] = frozenset(CAPABILITIES[c] for c in DEFAULT_CAPS)
    mounts: tuple[VolumeMount, ...] = ()

    def cap_names(self) -> list[str]:
        return sorted(n for n, v in CAPABILITIES.items() if v in self.caps)


@dataclass(frozen=True)
class PodSecurity:
    volumes: tuple[Volume, ...] = ()
    containers: dict[str, ContainerSecurity] = field(default_factory=dict)
    fs_group: Optional[int] = None
    # Host paths the pod still sees (read-only) under the tmpfs it gets at /run: only for
    # netlab's own add-ons (kube-dns reads the lab's DNS records there).
    host_paths: tuple[str, ...] = ()

    def container(self, name: str) -> ContainerSecurity:
        return self.containers.get(name) or ContainerSecurity()

    def pod_mounts(self) -> dict[str, VolumeMount]:
        """The mounts the pod's shared mount namespace gets: the first container to claim a
        path decides what is there; a container that wants something else at that path gets
        its own mount namespace (runtime/pods.py)."""
        out: dict[str, VolumeMount] = {}
        for cs in self.containers.values():
            for m in cs.mounts:
                out.setdefault(m.path, m)
        return out


class _Err:
    def __init__(self, file: str, obj: str):
        self.file, self.obj = file, obj

    def __call__(self, path: str, message: str, value: Any = None) -> InvalidError:
        return InvalidError(message, value=value, file=self.file or None, obj=self.obj or None,
                            field=path)


def _map(value, path: str, err: _Err) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise err(path, "must be a mapping", value)
    return value


def _list(value, path: str, err: _Err) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise err(path, "must be a list", value)
    return value


def _id(value, path: str, err: _Err) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2147483647:
        raise err(path, "must be an integer between 0 and 2147483647, inclusive", value)
    return value


def _bool(value, path: str, err: _Err) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise err(path, "must be true or false", value)
    return value


def parse_quantity(value) -> int:
    """A Kubernetes quantity ('64Mi', '1G', 1000) in whole units; ValueError if malformed."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return int(value)
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(value)
    return int(float(m.group(1)) * _SUFFIX[m.group(2)])


def _cap_names(value, path: str, err: _Err) -> list[str]:
    names = []
    for i, raw in enumerate(_list(value, path, err)):
        if not isinstance(raw, str):
            raise err(f"{path}[{i}]", "must be a capability name", raw)
        name = raw.upper()
        name = name[4:] if name.startswith("CAP_") else name
        if name != "ALL" and name not in CAPABILITIES:
            raise err(f"{path}[{i}]", "unknown capability", raw)
        names.append(name)
    return names


def _parse_volumes(spec: dict, path: str, err: _Err) -> tuple[Volume, ...]:
    volumes: list[Volume] = []
    for i, rv in enumerate(_list(spec.get("volumes"), f"{path}.volumes", err)):
        vpath = f"{path}.volumes[{i}]"
        rv = _map(rv, vpath, err)
        name = rv.get("name")
        if not isinstance(name, str) or not name:
            raise err(f"{vpath}.name", "Required value")
        if not _DNS_LABEL.match(name):
            raise err(f"{vpath}.name", "must be a DNS label (lower case letters, digits, '-')", name)
        if any(v.name == name for v in volumes):
            raise err(f"{vpath}.name", "Duplicate value", name)
        kinds = [k for k in rv if k != "name"]
        if "hostPath" in kinds:
            raise err(f"{vpath}.hostPath", "hostPath volumes are not supported: a lab may not reach "
                                           "into the host's filesystem (use an emptyDir)")
        if kinds == ["projected"]:
            volumes.append(Volume(name, 64 << 10, projected=True))
            continue
        if kinds != ["emptyDir"]:
            if not kinds:
                raise err(vpath, "must specify a volume type (netlab supports emptyDir)")
            raise err(f"{vpath}.{kinds[0]}", f"netlab supports emptyDir volumes only ({_VOLUME_TYPES_HINT})")
        ed = _map(rv.get("emptyDir"), f"{vpath}.emptyDir", err)
        medium = ed.get("medium") or ""
        if medium not in ("", "Memory"):
            raise err(f"{vpath}.emptyDir.medium", 'supported values: "", "Memory"', medium)
        size = EMPTYDIR_DEFAULT_SIZE
        if ed.get("sizeLimit") not in (None, ""):
            try:
                size = parse_quantity(ed["sizeLimit"])
            except ValueError:
                raise err(f"{vpath}.emptyDir.sizeLimit", "must be a quantity such as 64Mi",
                          ed["sizeLimit"]) from None
            if size <= 0:
                raise err(f"{vpath}.emptyDir.sizeLimit", "must be greater than zero", ed["sizeLimit"])
        volumes.append(Volume(name, size))
    return tuple(volumes)


def _parse_mounts(rc: dict, cpath: str, volumes: tuple[Volume, ...], err: _Err) -> tuple[VolumeMount, ...]:
    mounts: list[VolumeMount] = []
    for j, rm in enumerate(_list(rc.get("volumeMounts"), f"{cpath}.volumeMounts", err)):
        mpath = f"{cpath}.volumeMounts[{j}]"
        rm = _map(rm, mpath, err)
        name = rm.get("name")
        if not isinstance(name, str) or not name:
            raise err(f"{mpath}.name", "Required value")
        if not any(v.name == name for v in volumes):
            raise err(f"{mpath}.name", "Not found: no volume of the pod has this name", name)
        target = rm.get("mountPath")
        if not isinstance(target, str) or not target:
            raise err(f"{mpath}.mountPath", "Required value")
        if not target.startswith("/") or ".." in target.split("/"):
            raise err(f"{mpath}.mountPath", "must be an absolute path without '..'", target)
        target = posixpath.normpath(target)
        if target == "/" or target.split("/")[1] in ("proc", "sys", "dev"):
            raise err(f"{mpath}.mountPath", "may not be / or under /proc, /sys or /dev", target)
        if any(m.path == target for m in mounts):
            raise err(f"{mpath}.mountPath", "must be unique", target)
        sub = rm.get("subPath") or ""
        if not isinstance(sub, str) or sub.startswith("/") or ".." in sub.split("/"):
            raise err(f"{mpath}.subPath", "must be a relative path without '..'", sub)
        projected = any(v.name == name and v.projected for v in volumes)
        read_only = _bool(rm.get("readOnly"), f"{mpath}.readOnly", err) or projected
        mounts.append(VolumeMount(name, target, read_only, posixpath.normpath(sub) if sub else ""))
    return tuple(mounts)


def parse(spec: Any, file: str = "", obj: str = "", path: str = "spec") -> PodSecurity:
    """The security-relevant parts of a pod spec (a raw manifest mapping)."""
    err = _Err(file, obj)
    spec = _map(spec, path, err)
    volumes = _parse_volumes(spec, path, err)
    psc = _map(spec.get("securityContext"), f"{path}.securityContext", err)
    pod_user = _id(psc.get("runAsUser"), f"{path}.securityContext.runAsUser", err)
    pod_group = _id(psc.get("runAsGroup"), f"{path}.securityContext.runAsGroup", err)
    pod_non_root = _bool(psc.get("runAsNonRoot"), f"{path}.securityContext.runAsNonRoot", err)
    fs_group = _id(psc.get("fsGroup"), f"{path}.securityContext.fsGroup", err)
    groups = [_id(g, f"{path}.securityContext.supplementalGroups[{i}]", err)
              for i, g in enumerate(_list(psc.get("supplementalGroups"),
                                          f"{path}.securityContext.supplementalGroups", err))]
    if fs_group is not None:
        groups.append(fs_group)
    containers: dict[str, ContainerSecurity] = {}
    for i, rc in enumerate(_list(spec.get("containers"), f"{path}.containers", err)):
        cpath = f"{path}.containers[{i}]"
        rc = _map(rc, cpath, err)
        sc = _map(rc.get("securityContext"), f"{cpath}.securityContext", err)
        spath = f"{cpath}.securityContext"
        if _bool(sc.get("privileged"), f"{spath}.privileged", err):
            raise err(f"{spath}.privileged", "privileged containers are not supported: a lab may not "
                                             "change the host")
        user = _id(sc.get("runAsUser"), f"{spath}.runAsUser", err)
        group = _id(sc.get("runAsGroup"), f"{spath}.runAsGroup", err)
        non_root = sc.get("runAsNonRoot")
        non_root = pod_non_root if non_root is None else _bool(non_root, f"{spath}.runAsNonRoot", err)
        capsec = _map(sc.get("capabilities"), f"{spath}.capabilities", err)
        add = _cap_names(capsec.get("add"), f"{spath}.capabilities.add", err)
        drop = _cap_names(capsec.get("drop"), f"{spath}.capabilities.drop", err)
        for j, name in enumerate(add):
            if name not in DEFAULT_CAPS and name not in ADDABLE_CAPS:
                raise err(f"{spath}.capabilities.add[{j}]",
                          f"netlab does not grant {name}: it would let a pod change the host "
                          f"(grantable beyond the defaults: {', '.join(ADDABLE_CAPS)})", capsec["add"][j])
        caps = set() if "ALL" in drop else {CAPABILITIES[c] for c in DEFAULT_CAPS} - {CAPABILITIES[c] for c in drop}
        caps |= {CAPABILITIES[c] for c in add}
        name = rc.get("name")
        containers[str(name)] = ContainerSecurity(
            run_as_user=pod_user if user is None else user,
            run_as_group=pod_group if group is None else group,
            run_as_non_root=non_root, groups=tuple(groups), caps=frozenset(caps),
            mounts=_parse_mounts(rc, cpath, volumes, err))
    return PodSecurity(volumes=volumes, containers=containers, fs_group=fs_group)


def check(spec: Any, file: str = "", obj: str = "", path: str = "spec") -> None:
    """Raise a one-line InvalidError if the pod spec asks for something netlab refuses."""
    parse(spec, file, obj, path)


def for_pod(pod, lab: str = "") -> PodSecurity:
    """The settings the runtime applies to a pod (a model.objects.Pod) of lab `lab`."""
    from .addons import ADDON_SOURCE, records_path
    sec = parse((pod.meta.raw or {}).get("spec"), pod.meta.source, f"Pod/{pod.meta.name}")
    if lab and pod.meta.source == ADDON_SOURCE:
        sec = PodSecurity(sec.volumes, sec.containers, sec.fs_group,
                          host_paths=(posixpath.dirname(records_path(lab)),))
    from .addons import INGRESS_SOURCE, ingress_dir
    if lab and pod.meta.source == INGRESS_SOURCE:     # the controller reads its rendered config
        sec = PodSecurity(sec.volumes, sec.containers, sec.fs_group, host_paths=(ingress_dir(lab),))
    return sec
