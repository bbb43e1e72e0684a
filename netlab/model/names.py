"""Names of the kernel objects a lab creates.

Namespace names carry the lab's name so that `ip netns list` shows whose they are and two
labs coexist. Interface names must fit IFNAMSIZ (15 bytes): long ones are derived from a
short hash instead of being truncated into a collision.
"""
from __future__ import annotations

import hashlib
import re

from .errors import InvalidError

PREFIX = "netlab-"          # the mark on every network namespace netlab creates
IFNAMSIZ = 15
NETNS_MAX = 200             # /run/netns/<name> must stay well under NAME_MAX (255)
LAB_NAME_MAX = 40

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def check_dns_label(value: str, max_len: int = 63) -> str | None:
    """Return why `value` is not an RFC 1123 label, or None when it is one."""
    if not value:
        return "must not be empty"
    if len(value) > max_len:
        return f"must be no more than {max_len} characters"
    if not _DNS_LABEL.match(value):
        return ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                "or '-', and must start and end with an alphanumeric character")
    return None


def check_dns_subdomain(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not _DNS_SUBDOMAIN.match(value):
        return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character")
    return None


def check_port_name(value: str) -> str | None:
    """Return why `value` is not an IANA_SVC_NAME (a named port), or None when it is one."""
    if not value or len(value) > 15:
        return "must be no more than 15 characters"
    if not re.fullmatch(r"[-a-z0-9]+", value):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if "--" in value:
        return "must not contain consecutive hyphens"
    if not re.search(r"[a-z]", value):
        return "must contain at least one letter (a-z)"
    if value.startswith("-") or value.endswith("-"):
        return "must not begin or end with a hyphen"
    return None


_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
NAME_MAX = 255                  # bytes of one file name (a container's log file)
GENERATED_SUFFIX = 6            # "-" + 5 random characters: a pod name a controller makes


def check_label_key(key: str) -> str | None:
    """Return why `key` is not a label or annotation key ([prefix/]name), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "prefix part must be non-empty"
    if slash:
        problem = check_dns_subdomain(prefix)
        if problem:
            return f"prefix part {problem}"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character")
    return None


def check_label_value(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if value and not _QUALIFIED_NAME.match(value):
        return ("a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character")
    return None


def check_env_name(name: str) -> str | None:
    """Return why `name` is not a valid environment variable name (as Kubernetes checks it)."""
    if not _ENV_NAME.match(name):
        return ("a valid environment variable name must consist of alphabetic characters, digits, "
                "'_', '-', or '.', and must not start with a digit")
    return None


def generated_name_length(base: str) -> int:
    """The length of the names a controller gives its pods: base + '-' + 5 characters."""
    return len(base) + GENERATED_SUFFIX


def check_pod_file_names(namespace: str, pod_len: int, containers) -> str | None:
    """Return why a pod's log files (<namespace>_<pod>_<container>.log) cannot exist, or None.

    A file name has at most NAME_MAX (255) bytes; `pod_len` is the pod name's length.
    """
    for container in list(containers) + ["POD"]:
        size = len(namespace.encode()) + pod_len + len(str(container).encode()) + len("__.log")
        if size > NAME_MAX:
            return (f"too long: with namespace {namespace!r} and container {container!r} the "
                    f"pod's log file name <namespace>_<pod>_<container>.log would be {size} bytes "
                    f"(a file name has at most {NAME_MAX})")
    return None


def validate_lab_name(name: str, *, file: str | None = None) -> str:
    problem = check_dns_label(name, LAB_NAME_MAX)
    if problem:
        raise InvalidError(problem, value=name, file=file, obj="Lab", field="metadata.name")
    return name


def _netns(lab: str, role: str) -> str:
    # The lab name is a DNS label (no dots), so the first dot ends it unambiguously.
    return f"{PREFIX}{lab}.{role}"


def node_netns(lab: str, node: str) -> str:
    return _netns(lab, f"node-{node}")


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    # The namespace is a DNS label (no dots), so a dot ends it: with '-' here, pod "b-c" of
    # namespace "a" and pod "c" of namespace "a-b" would share one network namespace.
    name = _netns(lab, f"pod-{namespace}.{pod}")
    if len(name) > NETNS_MAX:
        name = _netns(lab, f"pod-{short_hash(namespace + '/' + pod, 16)}")
    return name


def underlay_netns(lab: str) -> str:
    return _netns(lab, "underlay")


def client_netns(lab: str) -> str:
    return _netns(lab, "client")


def internet_netns(lab: str) -> str:
    return _netns(lab, "internet")


def lab_of_netns(netns: str) -> str | None:
    """The lab a netlab namespace belongs to, or None for a namespace that is not ours."""
    if not netns.startswith(PREFIX) or "." not in netns:
        return None
    return netns[len(PREFIX):].split(".", 1)[0] or None


def host_veth(namespace: str, pod: str, *, calico: bool = False) -> str:
    """The node-side end of a pod's veth pair: 'veth' + 8 hex digits, like CNI's vethXXXXXXXX;
    with Calico's CNI plugin (backend calico, or Canal) 'cali' + the first 11 hex digits of
    sha1("<namespace>.<pod>"), the name that plugin gives it (so Felix's `cali+` matches find it)."""
    if calico:
        return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]
    return "veth" + short_hash(f"{namespace}/{pod}")


def uplink(node: str) -> str:
    """The underlay-bridge-side end of a node's eth0."""
    return "ul-" + short_hash(node, 8)


def check_ifname(name: str) -> str:
    if len(name.encode()) > IFNAMSIZ:
        raise InvalidError(f"interface name longer than {IFNAMSIZ} bytes", value=name)
    return name
