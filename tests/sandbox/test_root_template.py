"""A sandbox root built once (a template mount namespace) and joined by each child.

A root launcher builds an isolated child's root once per file system plan
(childkit.sandbox._template) and each child joins a private copy of it. These tests run
the escape attempts in children that entered through such a template, check that the
template was really joined, that children of one template do not share their /tmp, and
that a template whose bind source was replaced is rebuilt. The directory the children
read lies outside /tmp (a root with a bind beneath /tmp is never made a template).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import escape_actions as ea
import pytest
import sandbox_harness as harness

from childkit.sandbox import SandboxConfig, _enter, _filesystem, _template

ROOT = os.geteuid() == 0

pytestmark = pytest.mark.skipif(
    not ROOT, reason="templates are made by a root launcher only (joining a mount "
    "namespace needs CAP_SYS_ADMIN over it); unprivileged children build their own root, "
    "which test_sandbox_unprivileged.py proves")

#: Every root binds the interpreter and the childkit package: when one of them lives
#: under /tmp (a checkout cloned there), no root can be a template (the child's private
#: /tmp would hide it) and every child builds its own, as the other sandbox tests prove.
outside_tmp = pytest.mark.skipif(
    _filesystem.binds_under_tmp(_filesystem.plan([])),
    reason="the interpreter or this checkout lives under /tmp: every root is built in the "
    "child (test_no_template_for_a_root_with_binds_under_tmp checks the refusal)")


@pytest.fixture()
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="childkit-template-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def ctx(workdir: Path) -> Iterator[dict[str, Any]]:
    with ea.escape_context(workdir, Path.home()) as context:
        yield context


class _Joined:
    """Runs every child of a test through one template; records, in the child, whether
    it joined the template (read back by the action that runs there)."""

    def __init__(self, config: SandboxConfig, monkeypatch: pytest.MonkeyPatch) -> None:
        self.plan = _filesystem.plan(config.readonly_paths)
        fd = _template.template_for(self.plan)
        assert fd is not None, "a root parent must get a template for a plan outside /tmp"
        self.fd = fd
        self.joined: list[bool] = []
        original = _enter._join_template

        def join(template: Any) -> bool:
            joined = original(template)
            self.joined.append(joined)
            return joined

        monkeypatch.setattr(_enter, "_join_template", join)
        monkeypatch.setattr(harness, "enter", self._enter)

    def _enter(self, config: SandboxConfig, keep_fds: list[int]) -> None:
        # In the forked child: its own copy of the template fd, as a launcher child has.
        _enter.enter_planned(config, keep_fds, self.plan, os.dup(self.fd))

    def close(self) -> None:
        _template.drop(self.plan)


@pytest.fixture()
def joined(ctx: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[_Joined]:
    through = _Joined(SandboxConfig(readonly_paths=(ctx["ro_dir"],)), monkeypatch)
    try:
        yield through
    finally:
        through.close()


@outside_tmp
def test_a_joined_template_gives_the_same_view(joined: _Joined, ctx: dict[str, Any]) -> None:
    def view(ctx: dict[str, Any]) -> dict[str, Any]:
        before = sorted(os.listdir("/tmp"))
        with open(f"/tmp/mine-{os.getpid()}", "w") as f:
            f.write("x")
        return {"joined": joined.joined, "tmp_before": before,
                "ro_dir": sorted(os.listdir(ctx["ro_dir"])), "root": sorted(os.listdir("/"))}

    (Path(ctx["ro_dir"]) / "readable").write_text("yes")
    config = SandboxConfig(readonly_paths=(ctx["ro_dir"],))
    for _ in range(2):  # the second must not see the first one's /tmp file
        outcome = harness.run(view, ctx, config)
        assert outcome.ok, outcome.describe()
        report = outcome.report["value"]  # type: ignore[index]
        assert report["joined"] == [True], report
        assert report["tmp_before"] == [], report  # a /tmp of its own, empty
        assert "readable" in report["ro_dir"], report
        assert "home" not in report["root"] and "etc" not in report["root"], report


@outside_tmp
def test_escapes_fail_through_a_template(joined: _Joined, ctx: dict[str, Any]) -> None:
    config = SandboxConfig(readonly_paths=(ctx["ro_dir"],))
    for case in ea.CASES:
        outcome = harness.run(case.action, ctx, config)
        assert outcome.report is not None and outcome.report["stage"] == "action", (
            f"{case.name} through a template: {outcome.describe()}")
    # The same errors as a root built in the child (test_specific_errors).
    for action, errs in {ea.write_readonly_dir: {30}, ea.write_root: {30},
                         ea.read_home_secret: {2}, ea.read_shadow: {2},
                         ea.write_hidden_dir: {2}, ea.mount_tmpfs: {1},
                         ea.find_inherited_fd: {9}}.items():
        outcome = harness.run(action, ctx, config)
        assert outcome.errno in errs, f"{action.__name__}: {outcome.describe()}"


@outside_tmp
def test_a_replaced_source_gets_a_new_template(workdir: Path) -> None:
    shown = workdir / "shown"
    shown.mkdir()
    plan = _filesystem.plan([str(shown)])
    try:
        first = _template.template_for(plan)
        assert first is not None
        assert _template.template_for(plan) == first  # fresh: reused
        shown.rename(workdir / "old")
        shown.mkdir()
        (shown / "new").write_text("new")
        second = _template.template_for(plan)
        assert second is not None
        assert _template._templates[plan][1] == _filesystem.identities(plan.binds)
    finally:
        _template.drop(plan)
    assert plan not in _template._templates


def test_no_template_for_a_root_with_binds_under_tmp(tmp_path: Path) -> None:
    plan = _filesystem.plan([str(tmp_path)])
    assert _template.template_for(plan) is None
