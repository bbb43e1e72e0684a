"""CLI argument handling and the checks that need no lab: exec's option order, exec's proof
that a PID is still the pod's process, up's --timeout, the state directory's trust and modes."""
from __future__ import annotations

import os
import stat

import pytest
from typer.testing import CliRunner

from netlab import engine, state
from netlab.cli import exec_cmds, main
from netlab.model.errors import InvalidError, StateError
from netlab.runtime import procs

main._register()


@pytest.fixture
def captured(monkeypatch):
    seen = {}
    monkeypatch.setattr(exec_cmds, "run_exec", lambda **kw: seen.update(kw))
    return seen


@pytest.mark.parametrize("argv", [
    ["exec", "web", "-c", "side", "--lab", "L", "--", "ls", "-l", "/"],      # kubectl's order
    ["exec", "-c", "side", "--lab", "L", "web", "--", "ls", "-l", "/"],
    ["exec", "--lab", "L", "web", "-c", "side", "--", "ls", "-l", "/"],
    ["exec", "web", "--lab=L", "--container=side", "--", "ls", "-l", "/"],
])
def test_exec_options_anywhere_before_the_double_dash(captured, argv):
    result = CliRunner().invoke(main.app, argv)
    assert result.exit_code == 0, result.output
    assert captured["target"] == "web" and captured["container"] == "side" and captured["lab"] == "L"
    assert captured["command"] == ["ls", "-l", "/"]


def test_everything_after_the_double_dash_is_the_command(captured):
    result = CliRunner().invoke(main.app, ["exec", "web", "-n", "prod", "--", "sh", "-c", "x", "--lab", "-c", "--"])
    assert result.exit_code == 0, result.output
    assert captured["target"] == "web" and captured["namespace"] == "prod" and captured["lab"] is None
    assert captured["command"] == ["sh", "-c", "x", "--lab", "-c", "--"]


def test_exec_node_takes_the_first_word_as_the_command(monkeypatch):
    calls = []
    monkeypatch.setattr(exec_cmds, "lab_name", lambda lab: calls.append(lab) or (_ for _ in ()).throw(StateError("stop")))
    with pytest.raises(StateError):
        exec_cmds.run_exec(target="hostname", command=[], container=None, node="node1", client=False,
                           internet=False, lab="L", namespace="default")
    assert calls == ["L"]


def test_exec_without_a_command_is_refused():
    from netlab.model.errors import LabError
    with pytest.raises(LabError, match="command"):
        exec_cmds.run_exec(target="web", command=[], container=None, node=None, client=False,
                           internet=False, lab="L", namespace="default")


def test_a_pid_whose_start_time_differs_is_refused():
    me = os.getpid()
    ticks = procs.start_ticks(me)
    inode = procs.netns_inode(me)
    with pytest.raises(StateError, match="not the one its agent started"):
        exec_cmds.open_pod_namespaces(me, ticks + 1, inode)
    with pytest.raises(StateError, match="not the one its agent started"):
        exec_cmds.open_pod_namespaces(me, None, inode)
    with pytest.raises(StateError, match="not the one its agent started"):
        exec_cmds.open_pod_namespaces(2 ** 22 + 12345, ticks, inode)       # no such process


def test_the_hosts_namespace_is_never_entered():
    me = os.getpid()
    with pytest.raises(StateError, match="missing"):
        exec_cmds.open_pod_namespaces(me, procs.start_ticks(me), procs.netns_inode(me))


def test_nsenter_argv_names_descriptors_not_pids():
    fds = {"net": 10, "uts": 11, "ipc": 12, "pid": 13, "mount": 14, "root": 15}
    argv = exec_cmds.pod_exec_argv(fds, ["ip", "addr"])
    assert argv[0].endswith("nsenter")
    assert "--net=/proc/self/fd/10" in argv and "--mount=/proc/self/fd/14" in argv
    assert "--root=/proc/self/fd/15" in argv and "--wd=/proc/self/fd/15" in argv
    assert not any(a.startswith("--target") for a in argv)
    assert argv[-3:] == ["--", "ip", "addr"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, -0.5])
def test_up_rejects_a_timeout_that_is_not_finite_and_positive(bad):
    with pytest.raises(InvalidError, match="--timeout"):
        engine.check_timeout(bad)
    with pytest.raises(InvalidError, match="--timeout"):
        engine.up("/nonexistent-lab-dir", wait=bad)     # before anything is loaded or built


@pytest.mark.parametrize("bad", ["nan", "inf", "-1"])
def test_cli_up_rejects_bad_timeouts_in_one_line(bad, tmp_path):
    result = CliRunner().invoke(main.app, ["up", str(tmp_path), "--timeout", bad])
    assert result.exit_code != 0
    assert isinstance(result.exception, InvalidError)


@pytest.fixture
def state_root(tmp_path, monkeypatch):
    root = tmp_path / "netlab-state"
    monkeypatch.setattr(state, "STATE_ROOT", root)
    return root


def test_state_root_is_created_owner_only_and_files_are_0600(state_root):
    owner = state.claim_lab("lab1")
    assert stat.S_IMODE(state_root.stat().st_mode) == 0o700
    assert stat.S_IMODE(state.lab_dir("lab1").stat().st_mode) == 0o700
    assert stat.S_IMODE(state.log_dir("lab1").stat().st_mode) == 0o700
    assert stat.S_IMODE(state.owner_file("lab1").stat().st_mode) == 0o600
    assert state.lab_id("lab1") == owner["id"]
    old = os.umask(0o022)
    try:
        state.write_json(state.state_file("lab1"), {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.state_file("lab1").stat().st_mode) == 0o600


def test_the_name_is_claimed_once(state_root):
    state.claim_lab("lab1")
    with pytest.raises(FileExistsError):
        state.claim_lab("lab1")


def test_own_state_root_is_tightened(state_root):
    state_root.mkdir(mode=0o755)
    os.chmod(state_root, 0o755)
    state.check_root()
    assert stat.S_IMODE(state_root.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_state_root_others_can_write_is_refused(state_root, mode):
    state_root.mkdir()
    os.chmod(state_root, mode)
    with pytest.raises(state.UntrustedStateDir, match="writable by group or others"):
        state.check_root()
    with pytest.raises(state.UntrustedStateDir):
        state.claim_lab("lab1")
    assert not state.lab_dir("lab1").exists()


def test_a_state_root_owned_by_another_user_is_refused(state_root):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory away")
    state_root.mkdir(mode=0o700)
    os.chown(state_root, 65534, 65534)
    with pytest.raises(state.UntrustedStateDir, match="owned by uid 65534"):
        state.check_root()


def test_a_symlinked_state_root_is_refused(state_root, tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    state_root.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(state.UntrustedStateDir, match="symbolic link"):
        state.check_root()


def test_cli_refuses_an_untrusted_state_root_in_one_line(state_root):
    state_root.mkdir()
    os.chmod(state_root, 0o777)
    result = CliRunner().invoke(main.app, ["list"])
    assert result.exit_code != 0
    assert isinstance(result.exception, state.UntrustedStateDir)


def test_failed_ups_keep_their_logs_and_only_the_last_few(state_root):
    for i in range(state.KEEP_FAILED + 2):
        state.claim_lab("lab1")
        (state.log_dir("lab1") / "default_a_web.log").write_text(f"run {i}\n")
        state.agent_log("lab1").write_text(f"agent {i}\n")
        kept = state.keep_failure("lab1")
        os.utime(kept, (1000 + i, 1000 + i))
        state.remove_lab_dir("lab1")
        assert (kept / "logs" / "default_a_web.log").read_text() == f"run {i}\n"
        assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    kept_dirs = sorted((state_root / state.FAILED).iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(kept_dirs) == state.KEEP_FAILED
    assert state.tail(kept_dirs[-1] / "agent.log") == [f"agent {state.KEEP_FAILED + 1}"]
    assert state.labs_with_state() == []          # .failed is not a lab
