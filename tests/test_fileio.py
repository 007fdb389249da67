"""Folder replacement by vaezoo.fileio.atomic_path survives a kill at every step (issue 29, section 4)."""

import os
import subprocess
import sys
import textwrap

import pytest

from vaezoo import fileio

# A writer that replaces the folder target <path> with one holding "new" and is killed (os._exit, no
# cleanup, as SIGKILL) right after the named step of the replacement.
WRITER = textwrap.dedent("""
    import importlib.util, os, sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("fileio", sys.argv[3])  # the module alone: no TensorFlow
    fileio = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fileio)
    path, kill_after = Path(sys.argv[1]), sys.argv[2]
    real_step = fileio._step
    def step(name, function, *args):
        real_step(name, function, *args)
        if name == kill_after:
            os._exit(137)
    fileio._step = step
    with fileio.atomic_path(path) as tmp:
        tmp.mkdir()
        (tmp / "content.txt").write_text("new")
        if kill_after == "writing":
            os._exit(137)
""")


def _folder(path, text):
    path.mkdir(parents=True)
    (path / "content.txt").write_text(text)


def _killed_writer(path, kill_after):
    result = subprocess.run([sys.executable, "-c", WRITER, str(path), kill_after, fileio.__file__],
                            capture_output=True, text=True)
    assert result.returncode == 137, result.stderr


def _hidden(folder, replacements_only=False):
    marks = ("-new-", "-old-") if replacements_only else ("",)
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(fileio.PARTIAL_PREFIX) and any(m in p.name for m in marks))


# after the step: what the target holds once recovered ("old": the write never completed its swap).
CASES = {"writing": "old", "complete": "old", "aside": "new", "in": "new"}


@pytest.mark.parametrize("kill_after", list(CASES))
@pytest.mark.parametrize("recovered_by", ["next write", "load", "clean_partials"])
def test_a_kill_at_any_step_of_a_folder_replacement_loses_nothing(tmp_path, kill_after, recovered_by):
    target = tmp_path / "model" / "1"
    _folder(target, "old")
    _killed_writer(target, kill_after)
    if kill_after == "aside":  # the window: no folder at the target, both copies hidden beside it
        assert not target.exists() and len(_hidden(target.parent)) == 2
    if recovered_by == "next write":
        real_recover, seen = fileio.recover, []

        def recover(path):  # what the next write found at the target before it wrote
            seen.append((path / "content.txt").read_text() if path.exists() else None)
            real_recover(path)
            seen.append((path / "content.txt").read_text())

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fileio, "recover", recover)
            with fileio.atomic_path(target) as tmp:
                _folder(tmp, "newest")
        assert seen[1] == CASES[kill_after] and (target / "content.txt").read_text() == "newest"
    elif recovered_by == "load":
        from vaezoo.export import savedmodel

        assert savedmodel.versions(target.parent) == [1]  # listing (or loading) a model folder puts it back
        assert (target / "content.txt").read_text() == CASES[kill_after]
    else:
        fileio.clean_partials(tmp_path)
        assert (target / "content.txt").read_text() == CASES[kill_after]
        assert _hidden(target.parent) == []  # the killed writer's temporary folder is gone too
    assert _hidden(target.parent, replacements_only=True) == []


def test_recovery_prefers_the_complete_new_copy_and_leaves_a_live_writer_alone(tmp_path):
    target = tmp_path / "2"
    _folder(tmp_path / f"{fileio.PARTIAL_PREFIX}999999-old-2", "old")  # a dead writer's old folder ...
    _folder(tmp_path / f"{fileio.PARTIAL_PREFIX}999999-new-2", "new")  # ... and its complete copy
    assert fileio.recover(target).name.endswith("-new-2")
    assert (target / "content.txt").read_text() == "new" and _hidden(tmp_path) == []
    # A running writer (this test's parent process stands in for one) is between its renames: hands off.
    live = tmp_path / f"{fileio.PARTIAL_PREFIX}{os.getppid()}-old-3"
    _folder(live, "old")
    assert fileio.recover(tmp_path / "3") is None and live.exists()
    # A name that only ends like the target's is another target's leftover.
    _folder(tmp_path / f"{fileio.PARTIAL_PREFIX}999999-old-x-2", "other")
    fileio.recover(target)
    assert (tmp_path / f"{fileio.PARTIAL_PREFIX}999999-old-x-2").exists()
