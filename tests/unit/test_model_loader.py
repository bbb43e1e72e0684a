"""netlab.model.loader: a lab from a directory or one multi-document file, errors in one line."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from netlab.model.errors import InvalidError, LabError
from netlab.model.loader import load_lab as _load_lab, load_objects, manifest_files, read_objects
from netlab.model.objects import Pod, Service

from .model_helpers import check_error


def load_lab(*args, **kwargs):
    """These tests are about the lab's own objects: leave the kube-dns add-on out."""
    return _load_lab(*args, addons=False, **kwargs)

LAB = """\
apiVersion: netlab/v1
kind: Lab
metadata: {name: unit}
spec: {nodes: 2}
"""
POD = """\
apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {app: web}}
spec:
  containers:
  - name: web
    image: netexec
    ports: [{containerPort: 8080, name: http}]
"""
SVC = """\
apiVersion: v1
kind: Service
metadata: {name: %s}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    return root


def load_error(path: Path, **kw) -> LabError:
    with pytest.raises(LabError) as info:
        load_lab(path, **kw)
    return info.value


def test_directory_lab(tmp_path):
    write(tmp_path, {"lab.yaml": LAB, "pod.yaml": POD % "web", "svc/web.yml": SVC % "web",
                     ".hidden/junk.yaml": "{{{ not yaml", "README.md": "# not a manifest",
                     "empty.yaml": "---\n---\n"})
    files = [p.relative_to(tmp_path).as_posix() for p in manifest_files(tmp_path)]
    assert files == ["empty.yaml", "lab.yaml", "pod.yaml", "svc/web.yml"]
    cluster = load_lab(tmp_path, seed=1)
    assert cluster.name == "unit" and len(cluster.nodes) == 2
    assert list(cluster.pods) == ["default/web"] and list(cluster.services) == ["default/web"]
    assert cluster.pod("web").meta.source == str(tmp_path / "pod.yaml")


def test_multi_document_file_and_list(tmp_path):
    text = LAB + "---\n" + POD % "a" + "---\n" + """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {containers: [{name: c}]}}
- {apiVersion: v1, kind: Service, metadata: {name: b}, spec: {selector: {app: web}, ports: [{port: 80}]}}
"""
    path = write(tmp_path, {"all.yaml": text}) / "all.yaml"
    lab_doc, lab_file, objects = read_objects(path)
    assert lab_doc["metadata"]["name"] == "unit" and lab_file == str(path)
    assert [(o.kind, o.meta.name) for o in objects] == [("Pod", "a"), ("Pod", "b"), ("Service", "b")]
    cluster = load_lab(path)
    assert sorted(cluster.pods) == ["default/a", "default/b"]


def test_json_manifest(tmp_path):
    write(tmp_path, {"pod.json": '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"},'
                                 ' "spec": {"containers": [{"name": "c"}]}}'})
    assert list(load_lab(tmp_path).pods) == ["default/j"]


def test_default_lab_name_comes_from_the_directory_or_file(tmp_path):
    d = write(tmp_path / "My_Lab", {"pod.yaml": POD % "web"})
    assert load_lab(d).name == "my-lab"
    assert load_lab(d / "pod.yaml").name == "pod"
    assert load_lab(d, name="given").name == "given"
    check_error(load_error(d, name="Bad_Name"), "--name", "Lab", "metadata.name", "Invalid value: 'Bad_Name'")


def test_overrides_reach_the_config(tmp_path):
    write(tmp_path, {"lab.yaml": LAB, "pod.yaml": POD % "web"})
    cluster = load_lab(tmp_path, nodes=3, backend="host-gw", proxy_mode="iptables")
    assert len(cluster.nodes) == 3
    assert (cluster.config.backend, cluster.config.proxy_mode) == ("host-gw", "iptables")
    check_error(load_error(tmp_path, proxy_mode="ipvs"), str(tmp_path / "lab.yaml"), "Lab",
                "spec.proxyMode", "Invalid value: 'ipvs': supported values")


def test_relative_path_shows_relative_file_names(tmp_path, monkeypatch):
    write(tmp_path, {"lab/pod.yaml": POD % "Web"})
    monkeypatch.chdir(tmp_path)
    err = load_error(Path("lab"))
    check_error(err, os.path.join("lab", "pod.yaml"), "Pod/Web", "metadata.name")


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("text,where", [
    ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web\nspec: {}\n",
     "line 6, column 5: expected ',' or '}', but got ':'"),
    ("a: 1\n  b: 2\n", "line 2, column 4: mapping values are not allowed here"),
    ("kind: Pod\n\tname: x\n", "line 2, column 1: found character '\\t' that cannot start any token"),
])
def test_invalid_yaml_names_file_line_and_column(tmp_path, text, where):
    path = write(tmp_path, {"pod.yaml": text}) / "pod.yaml"
    assert check_error(load_error(tmp_path), str(path), None, None) == f"{path}: invalid YAML: {where}"


def test_invalid_yaml_in_a_later_document(tmp_path):
    write(tmp_path, {"all.yaml": POD % "a" + "---\n" + "kind: Pod\nmetadata: {name: [\n"})
    assert str(load_error(tmp_path)).endswith("all.yaml: invalid YAML: line 12, column 1: "
                                              "expected the node content, but found '<stream end>'")


def test_file_that_is_not_utf8(tmp_path):
    path = write(tmp_path, {"pod.yaml": b"kind: Pod\nname: \xff\xfe\n"}) / "pod.yaml"
    check_error(load_error(tmp_path), str(path), None, None, "not UTF-8 text (byte 17)")


def test_unreadable_and_missing_paths(tmp_path):
    check_error(load_error(tmp_path / "nope"), str(tmp_path / "nope"), None, None, "no such lab directory")
    (tmp_path / "empty").mkdir()
    check_error(load_error(tmp_path / "empty"), str(tmp_path / "empty"), None, None, "no manifests")


def test_unknown_kind_and_api_version(tmp_path):
    path = write(tmp_path, {"d.yaml": "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: web}\n"}) / "d.yaml"
    check_error(load_error(tmp_path), str(path), "CronJob/web", "kind",
                "Invalid value: 'CronJob': unknown kind")
    path.write_text("apiVersion: v2\nkind: Service\nmetadata: {name: web}\n")
    check_error(load_error(tmp_path), str(path), "Service/web", "apiVersion",
                "Invalid value: 'v2': Service is served as apiVersion 'v1'")


@pytest.mark.parametrize("text,obj,field", [
    ("apiVersion: v1\nkind: Pod\nmetadata: {labels: {a: b}}\nspec: {containers: [{name: c}]}\n",
     "Pod/?", "metadata.name"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {}\n", "Pod/web", "spec.containers"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {a: b}}\n", "Service/web",
     "spec.ports"),
    ("apiVersion: v1\nkind: ReplicationController\nmetadata: {name: web}\nspec: {replicas: 1}\n",
     "ReplicationController/web", "spec.template"),
    ("apiVersion: v1\nmetadata: {name: web}\n", "?/web", "kind"),
])
def test_missing_required_fields(tmp_path, text, obj, field):
    path = write(tmp_path, {"x.yaml": text}) / "x.yaml"
    check_error(load_error(tmp_path), str(path), obj, field, "Required value")


def test_bad_item_in_a_list_names_its_file(tmp_path):
    text = ("apiVersion: v1\nkind: List\nitems:\n"
            "- {apiVersion: v1, kind: Pod, metadata: {name: ok}, spec: {containers: [{name: c}]}}\n"
            "- {apiVersion: v1, kind: Pod, metadata: {name: bad}, spec: {containers: [{name: c, "
            "ports: [{containerPort: 70000}]}]}}\n")
    path = write(tmp_path, {"list.yaml": text}) / "list.yaml"
    assert str(load_error(tmp_path)) == (
        f"{path}: Pod/bad: spec.containers[0].ports[0].containerPort: "
        "Invalid value: 70000: must be between 1 and 65535, inclusive")


def test_document_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path, {"x.yaml": POD % "a" + "---\njust a string\n"}) / "x.yaml"
    assert str(load_error(tmp_path)) == f"{path}: document 2 is not a mapping"


def test_duplicate_names_across_files(tmp_path):
    write(tmp_path, {"a.yaml": POD % "web", "b/c.yaml": POD % "web"})
    err = load_error(tmp_path)
    check_error(err, str(tmp_path / "b" / "c.yaml"), "Pod/web", "metadata.name",
                f"duplicate Pod default/web (also in {tmp_path / 'a.yaml'})")


def test_same_name_in_other_kind_or_namespace_is_fine(tmp_path):
    other_ns = (POD % "web").replace("metadata: {name: web,", "metadata: {name: web, namespace: team,")
    write(tmp_path, {"a.yaml": POD % "web", "b.yaml": SVC % "web",
                     "ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
                     "c.yaml": other_ns})
    cluster = load_lab(tmp_path)
    assert sorted(cluster.pods) == ["default/web", "team/web"]
    assert list(cluster.services) == ["default/web"]


def test_second_lab_document(tmp_path):
    write(tmp_path, {"a-lab.yaml": LAB, "z/lab.yaml": LAB.replace("unit", "other")})
    err = load_error(tmp_path)
    assert str(err) == (f"{tmp_path / 'z' / 'lab.yaml'}: Lab: "
                        f"a second Lab document (the first is in {tmp_path / 'a-lab.yaml'})")
    path = write(tmp_path / "one", {"all.yaml": LAB + "---\n" + LAB})
    check_error(load_error(path), str(path / "all.yaml"), "Lab", None, "a second Lab document")


def test_bad_lab_document_names_its_file(tmp_path):
    write(tmp_path, {"cluster.yaml": LAB.replace("nodes: 2", "nodes: 0"), "pod.yaml": POD % "web"})
    check_error(load_error(tmp_path), str(tmp_path / "cluster.yaml"), "Lab", "spec.nodes", "between 1 and 250")


def test_admission_errors_surface_with_their_file(tmp_path):
    text = (POD % "web").replace("spec:\n", "spec:\n  nodeName: node9\n")
    write(tmp_path, {"pod.yaml": text})
    check_error(load_error(tmp_path), str(tmp_path / "pod.yaml"), "Pod/web", "spec.nodeName",
                "Invalid value: 'node9': no such node")


def test_load_objects_for_apply(tmp_path):
    write(tmp_path, {"pod.yaml": POD % "web", "svc.yaml": SVC % "web"})
    objects = load_objects(tmp_path)
    assert sorted(type(o).__name__ for o in objects) == ["Pod", "Service"]
    assert all(isinstance(o, (Pod, Service)) for o in objects)
    write(tmp_path, {"lab.yaml": LAB})
    with pytest.raises(InvalidError) as info:
        load_objects(tmp_path)
    check_error(info.value, str(tmp_path / "lab.yaml"), "Lab", None, "cannot be applied")
