"""The pytest plugin without root: a user's test that asks for a lab is skipped, with the reason."""
from __future__ import annotations

import textwrap

pytest_plugins = ["pytester"]


def test_skips_with_a_reason_when_not_root(pytester):
    pytester.makeconftest(textwrap.dedent("""
        import os, pytest

        @pytest.fixture(autouse=True)
        def not_root(monkeypatch):
            monkeypatch.setattr(os, "geteuid", lambda: 1000)
    """))
    pytester.makepyfile(test_user=textwrap.dedent("""
        def test_needs_a_lab(netlab_lab):
            netlab_lab("labs/none")
            raise AssertionError("not reached")
    """))
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*netlab needs root*sudo*"])


def test_the_plugin_is_registered_through_its_entry_point():
    from importlib.metadata import entry_points
    assert any(ep.value == "netlab.pytest_plugin" for ep in entry_points(group="pytest11"))
