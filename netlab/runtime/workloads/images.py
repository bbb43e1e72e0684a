"""Map a container (image, command, args, ports, env) to the argv the runtime starts."""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Optional

BUILTIN = "netlab-workload"

REDIS_PORT = 6379
GUESTBOOK_PORT = 80

# Searched besides $PATH, so that a trimmed PATH does not hide a Debian-installed daemon.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Images without an ENTRYPOINT: their `args` alone are the command, as in Kubernetes.
_SHELL_IMAGES = {"busybox", "alpine", "debian", "ubuntu", "centos", "fedora"}


def redis_server_path() -> Optional[str]:
    """The redis-server executable, or None when it is not installed."""
    search = os.pathsep.join(filter(None, [os.environ.get("PATH"), _SYSTEM_PATH]))
    return shutil.which("redis-server", path=search)


def resolve(image: str, command: Sequence[str], args: Sequence[str],
            ports: Sequence[tuple[int, str, str]], env: dict[str, str]) -> list[str]:
    """The argv a container runs.

    `ports` are the declared containerPorts as (port, protocol, name); `env` is the container's
    whole environment (Service variables included), read here for GET_HOSTS_FROM and the
    REDIS_*_SERVICE_HOST variables. An argv starting with BUILTIN is for `run_builtin()`.
    """
    if command:
        return [*command, *args]
    kind = _kind(image)
    if kind == "shell" and args:
        return list(args)
    if kind in ("redis-master", "redis-replica"):
        server = redis_server_path()
        if server:
            return _redis_argv(server, kind == "redis-replica", args, env)
    if kind == "guestbook":
        return [BUILTIN, "guestbook", *_guestbook_flags(ports, env), *args]
    if kind in ("pause", "kubedns", "dnsmasq"):
        return [BUILTIN, kind, *args]
    if kind == "echoserver":
        return [BUILTIN, "echoserver", *_port_flags([p for p in ports if p[1].upper() == "TCP"]), *args]
    return [BUILTIN, "netexec", *_port_flags(ports), *args]


def describe(image: str, command: Sequence[str] = (), args: Sequence[str] = ()) -> str:
    """A short description of what resolve() makes the container run, for `describe pod`."""
    kind = _kind(image)
    if command or (kind == "shell" and args):
        return f"its own command: {' '.join([*command, *args])}"
    if kind in ("redis-master", "redis-replica"):
        role = "replica" if kind == "redis-replica" else "master"
        if redis_server_path():
            return f"redis-server (real, {role})"
        return "netlab netexec test server (redis-server is not installed)"
    return {
        "guestbook": "netlab guestbook frontend (stands in for the PHP app)",
        "pause": "netlab pause (holds until SIGTERM)",
        "kubedns": "netlab kubedns (cluster DNS records on 0.0.0.0:10053, as kube-dns binds)",
        "dnsmasq": "dnsmasq (real, caching in front of kubedns)",
        "echoserver": "netlab echoserver (echoes each request: path, headers, client address)",
    }.get(kind, "netlab netexec test server")


def _kind(image: str) -> str:
    name = _image_name(image)
    base = name.rsplit("/", 1)[-1]
    guestbook = "guestbook" in name or base.startswith("gb-")
    # Frontend before redis: some frontend images are named after redis (example-guestbook-php-redis).
    if guestbook and ("frontend" in base or "php" in base):
        return "guestbook"
    if "redis" in base:
        return "redis-replica" if "slave" in base or "replica" in base else "redis-master"
    if base == "pause" or base.startswith("pause-"):
        return "pause"
    if base.startswith("k8s-dns-kube-dns"):
        return "kubedns"
    if base.startswith("k8s-dns-dnsmasq"):
        return "dnsmasq"
    if base.startswith("echoserver"):
        return "echoserver"
    if base in _SHELL_IMAGES:
        return "shell"
    return "netexec"


def _image_name(image: str) -> str:
    """'gcr.io/google_samples/gb-redisslave:v1' -> 'gcr.io/google_samples/gb-redisslave'."""
    name = image.split("@", 1)[0].lower()
    head, _, last = name.rpartition("/")  # a registry's ":port" is not a tag
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def _service_host(env: dict[str, str], service: str) -> str:
    """Where a Service is, found the way the guestbook images find it.

    GET_HOSTS_FROM=env reads {SERVICE}_SERVICE_HOST (empty if the Service did not exist when
    the pod started); anything else uses the Service's DNS name.
    """
    if env.get("GET_HOSTS_FROM") == "env":
        return env.get(service.upper().replace("-", "_") + "_SERVICE_HOST", "")
    return service


def _redis_argv(server: str, replica: bool, args: Sequence[str], env: dict[str, str]) -> list[str]:
    argv = [server, "--port", str(REDIS_PORT), "--bind", "0.0.0.0", "--protected-mode", "no",
            "--save", "", "--appendonly", "no",
            # Pods share this machine's filesystem: keep replication off disk, and start it now.
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
            "--repl-diskless-load", "on-empty-db"]
    if replica:
        argv += ["--replicaof", _service_host(env, "redis-master"), str(REDIS_PORT)]
    # The redis image's entrypoint takes args with or without a leading "redis-server".
    extra = list(args[1:] if args[:1] == ["redis-server"] else args)
    return argv + extra


def _guestbook_flags(ports: Sequence[tuple[int, str, str]], env: dict[str, str]) -> list[str]:
    port = next((p for p, proto, _ in ports if proto.upper() == "TCP"), GUESTBOOK_PORT)
    return [f"--port={port}", f"--master={_service_host(env, 'redis-master')}",
            f"--slave={_service_host(env, 'redis-slave')}"]


def _port_flags(ports: Sequence[tuple[int, str, str]]) -> list[str]:
    # netexec takes agnhost's flag names, so agnhost-style args in a manifest work the same way.
    flag = {"TCP": "--http-port", "UDP": "--udp-port"}
    return [f"{flag[proto.upper()]}={port}" for port, proto, _ in ports if proto.upper() in flag]
