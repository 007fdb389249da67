"""The Python blocks of the README and of its guides (docs/guide/) run as pasted, in order (the README first,
then the guides in the order of ``GUIDES``), with the data path and the run lengths shortened.

Each block must carry its own imports: before a block runs, the modules that earlier blocks imported are
dropped from the namespace (their variables stay, as in a reader's session). A block preceded by
``<!-- readme-test: skip: REASON -->`` is not run (only the gRPC client, which needs a TF Serving server).
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import pytest

import vaezoo
from conftest import rgb_image_folder

README = Path(__file__).resolve().parents[1] / "README.md"
GUIDES = [README.parent / "docs" / "guide" / f"{name}.md"
          for name in ("training", "inference", "evaluation", "export", "extending")]
BLOCK = re.compile(r"(?:<!-- readme-test: skip: (?P<reason>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def blocks() -> list[tuple[str, str, str | None]]:
    """``(page:line, code, skip reason)`` of every Python block, the README's first."""
    found = []
    for page in [README, *GUIDES]:
        text = page.read_text()
        name = page.relative_to(README.parent)
        found += [(f"{name}:{text.count(chr(10), 0, m.start('code')) + 1}", m.group("code"), m.group("reason"))
                  for m in BLOCK.finditer(text)]
    return found


def shorten(code: str, data_dir: Path) -> str:
    """The README's run lengths, made short for a test (what is replaced is listed here, nothing else)."""
    for old, new in (('"../shared/data"', repr(str(data_dir))), ("epochs=10", "epochs=1"),
                     ("num_samples=5000", "num_samples=20"),
                     ("num_samples=10_000", "num_samples=500")):
        code = code.replace(old, new)
    return code


def test_the_readme_has_python_blocks_and_only_one_skipped():
    found = blocks()
    assert len(found) >= 8
    assert [reason for _, _, reason in found if reason] == ["needs a running TF Serving server"]


def test_list_models_comment_shows_what_it_returns():
    for line in README.read_text().splitlines():
        match = re.match(r"\s*(vaezoo\.list_models\((?P<arg>[^)]*)\))\s*#\s*(?P<shown>\[.*\])", line)
        if match:
            shown = ast.literal_eval(match["shown"])
            assert vaezoo.list_models(*[ast.literal_eval(match["arg"])] if match["arg"] else []) == shown, line
            return
    pytest.fail("no list_models(...) line with its result in a comment")


def test_readme_python_blocks_run(tmp_path, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks write vae.keras and exports/ here
    rgb_image_folder(tmp_path / "my_images")  # the user's folder of "Train on your own images"
    namespace: dict = {}
    try:
        for line, code, reason in blocks():
            if reason:
                continue
            for key in [k for k, v in namespace.items() if isinstance(v, types.ModuleType)]:
                del namespace[key]  # a block imports what it uses
            try:
                exec(compile(shorten(code, data_dir), line, "exec"), namespace)
            except Exception as exc:  # name the block that failed
                raise AssertionError(f"the Python block at {line} failed: {type(exc).__name__}: {exc}")
    finally:
        vaezoo.registry.unregister_model("free_bits_vae")
    assert (tmp_path / "vae.keras").is_file() and (tmp_path / "exports" / "vae" / "vae.tflite").is_file()
