"""Pod security settings: users, capabilities, volumes; what would reach the host is refused."""
from __future__ import annotations

import pytest

from netlab.model import podsecurity as ps
from netlab.model.errors import InvalidError

DEFAULT = frozenset(ps.CAPABILITIES[c] for c in ps.DEFAULT_CAPS)


def spec(**extra):
    base = {"containers": [{"name": "app", "image": "busybox"}]}
    base.update(extra)
    return base


def test_defaults_are_dockers_capabilities_as_root():
    sec = ps.parse(spec())
    c = sec.container("app")
    assert c.caps == DEFAULT and len(DEFAULT) == 14
    assert c.run_as_user is None and c.run_as_group is None and not c.mounts
    assert "SYS_ADMIN" not in c.cap_names() and "NET_RAW" in c.cap_names()
    assert sec.container("unknown") == ps.ContainerSecurity()


def test_run_as_user_container_level_wins():
    sec = ps.parse({"securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000],
                                        "fsGroup": 2000},
                    "containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 2000}}]})
    assert (sec.container("a").run_as_user, sec.container("a").run_as_group) == (1000, 3000)
    assert (sec.container("b").run_as_user, sec.container("b").run_as_group) == (2000, 3000)
    assert sec.container("a").groups == (4000, 2000) and sec.fs_group == 2000


def test_capabilities_add_and_drop():
    sec = ps.parse(spec(containers=[
        {"name": "a", "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["NET_RAW", "CAP_KILL"]}}},
        {"name": "b", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]))
    a = sec.container("a")
    assert ps.CAPABILITIES["NET_ADMIN"] in a.caps
    assert ps.CAPABILITIES["NET_RAW"] not in a.caps and ps.CAPABILITIES["KILL"] not in a.caps
    assert sec.container("b").cap_names() == ["NET_BIND_SERVICE"]


@pytest.mark.parametrize("cap", ["SYS_ADMIN", "SYS_MODULE", "SYS_TIME", "ALL", "SYS_PTRACE", "DAC_READ_SEARCH"])
def test_capabilities_that_reach_the_host_are_refused(cap):
    with pytest.raises(InvalidError) as exc:
        ps.parse(spec(containers=[{"name": "a", "securityContext": {"capabilities": {"add": [cap]}}}]),
                 "pod.yaml", "Pod/p")
    assert "spec.containers[0].securityContext.capabilities.add[0]" in str(exc.value)


def test_unknown_capability():
    with pytest.raises(InvalidError, match="unknown capability"):
        ps.parse(spec(containers=[{"name": "a", "securityContext": {"capabilities": {"drop": ["NOPE"]}}}]))


def test_privileged_refused():
    with pytest.raises(InvalidError, match="privileged containers are not supported"):
        ps.parse(spec(containers=[{"name": "a", "securityContext": {"privileged": True}}]))


def test_hostpath_refused_with_file_object_and_field():
    with pytest.raises(InvalidError) as exc:
        ps.check(spec(volumes=[{"name": "root", "hostPath": {"path": "/"}}]), "lab/pod.yaml", "Pod/evil")
    line = str(exc.value)
    assert "\n" not in line
    assert line.startswith("lab/pod.yaml: Pod/evil: spec.volumes[0].hostPath: hostPath volumes are not supported")


@pytest.mark.parametrize("kind", ["configMap", "secret", "persistentVolumeClaim"])
def test_other_volume_types_refused(kind):
    with pytest.raises(InvalidError, match="netlab supports emptyDir volumes only") as exc:
        ps.check(spec(volumes=[{"name": "v", kind: {"name": "x"}}]), "f.yaml", "Pod/p")
    assert f"spec.volumes[0].{kind}" in str(exc.value)


def test_emptydir_shared_mounts_and_size():
    sec = ps.parse({"volumes": [{"name": "shared", "emptyDir": {"sizeLimit": "64Mi"}},
                                {"name": "mem", "emptyDir": {"medium": "Memory"}}],
                    "containers": [
                        {"name": "w", "volumeMounts": [{"name": "shared", "mountPath": "/data/"}]},
                        {"name": "r", "volumeMounts": [{"name": "shared", "mountPath": "/data", "readOnly": True},
                                                       {"name": "mem", "mountPath": "/cache", "subPath": "x"}]}]})
    assert sec.volumes == (ps.Volume("shared", 64 << 20), ps.Volume("mem", ps.EMPTYDIR_DEFAULT_SIZE))
    assert sec.container("w").mounts == (ps.VolumeMount("shared", "/data"),)
    assert sec.container("r").mounts[0] == ps.VolumeMount("shared", "/data", read_only=True)
    # The first container to claim a path decides the pod's shared view.
    assert sec.pod_mounts() == {"/data": ps.VolumeMount("shared", "/data"),
                                "/cache": ps.VolumeMount("mem", "/cache", sub_path="x")}


@pytest.mark.parametrize("mount, field, message", [
    ({"name": "nope", "mountPath": "/x"}, "volumeMounts[0].name", "Not found"),
    ({"name": "v", "mountPath": "relative"}, "volumeMounts[0].mountPath", "absolute"),
    ({"name": "v", "mountPath": "/proc/x"}, "volumeMounts[0].mountPath", "/proc"),
    ({"name": "v", "mountPath": "/x", "subPath": "../../etc"}, "volumeMounts[0].subPath", "relative"),
])
def test_bad_volume_mounts(mount, field, message):
    with pytest.raises(InvalidError, match=message) as exc:
        ps.parse({"volumes": [{"name": "v", "emptyDir": {}}],
                  "containers": [{"name": "a", "volumeMounts": [mount]}]})
    assert f"spec.containers[0].{field}" in str(exc.value)


def test_bad_values():
    with pytest.raises(InvalidError, match="sizeLimit"):
        ps.parse(spec(volumes=[{"name": "v", "emptyDir": {"sizeLimit": "lots"}}]))
    with pytest.raises(InvalidError, match="runAsUser"):
        ps.parse(spec(securityContext={"runAsUser": -1}))
    with pytest.raises(InvalidError, match="Duplicate"):
        ps.parse(spec(volumes=[{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]))


def test_quantities():
    assert ps.parse_quantity("1Gi") == 1 << 30
    assert ps.parse_quantity("500M") == 500_000_000
    assert ps.parse_quantity(1024) == 1024


HOSTPATH_RC = """
apiVersion: v1
kind: ReplicationController
metadata: {name: evil}
spec:
  replicas: 1
  selector: {app: evil}
  template:
    metadata: {labels: {app: evil}}
    spec:
      containers: [{name: c, image: busybox}]
      volumes: [{name: root, hostPath: {path: /}}]
"""

HOSTPATH_POD = """
apiVersion: v1
kind: Pod
metadata: {name: evil}
spec:
  containers: [{name: c, image: busybox, volumeMounts: [{name: root, mountPath: /host}]}]
  volumes: [{name: root, hostPath: {path: /}}]
"""


def _load(text: str):
    import yaml
    from netlab.model.objects import parse_object
    return parse_object(yaml.safe_load(text), "evil.yaml")


@pytest.mark.parametrize("text, obj, field", [
    (HOSTPATH_POD, "Pod/evil", "spec.volumes[0].hostPath"),
    (HOSTPATH_RC, "ReplicationController/evil", "spec.template.spec.volumes[0].hostPath"),
])
def test_hostpath_refused_at_load(text, obj, field):
    with pytest.raises(InvalidError) as exc:
        _load(text)
    assert str(exc.value).startswith(f"evil.yaml: {obj}: {field}: hostPath volumes are not supported")


def test_for_pod_reads_the_raw_spec():
    from netlab.model.objects import Meta, Pod, PodSpec, Container
    raw = {"spec": {"securityContext": {"runAsUser": 7}, "containers": [{"name": "c"}]}}
    pod = Pod(Meta("p", raw=raw, source="x.yaml"), PodSpec([Container("c")]))
    assert ps.for_pod(pod, "lab").container("c").run_as_user == 7
    assert ps.for_pod(pod, "lab").host_paths == ()


def test_projected_service_account_volume_loads_as_an_empty_read_only_dir():
    sec = ps.parse({"volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token"}}]}}],
                    "containers": [{"name": "a", "volumeMounts": [
                        {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}]})
    assert sec.volumes[0].projected
    assert sec.container("a").mounts[0].read_only


def test_confine_argv_for_exec_and_probes():
    from netlab.runtime.pods import confine_argv
    argv = confine_argv(ps.ContainerSecurity())
    assert argv[:2] == ["setpriv", "--bounding-set"] and "--no-new-privs" in argv
    assert argv[2].startswith("-all,") and "+net_raw" in argv[2] and "sys_admin" not in argv[2]
    argv = confine_argv(ps.ContainerSecurity(run_as_user=1000, run_as_group=3000, caps=frozenset()))
    assert argv[2] == "-all"
    assert argv[-5:] == ["--regid", "3000", "--reuid", "1000", "--clear-groups"]
