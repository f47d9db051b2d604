"""The README's examples run as printed (the first, and one per network library).

Every ```python block of the README is run in a fresh namespace, and what it
prints must be the ``# comment`` at the end of each ``print(...)`` line.
"""

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
NEEDS = {"flax": "flax", "equinox": "equinox", "haiku": "haiku"}


def _name(block):
  for module in NEEDS:
    if re.search(rf"^(import|from) {module}\b", block, re.M):
      return module
  return "core"


@pytest.mark.parametrize("block", BLOCKS, ids=[_name(b) for b in BLOCKS])
def test_readme_block_prints_what_its_comments_say(block):
  for module, package in NEEDS.items():
    if re.search(rf"^(import|from) {module}\b", block, re.M):
      pytest.importorskip(package)
  expected = [m.group(1) for m in re.finditer(r"^print\(.*\)\s+# (\S+)$", block, re.M)]
  assert expected, "each README example should show its output in comments"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(block, str(README), "exec"), {})
  assert out.getvalue().split() == expected


def test_the_readme_shows_every_library():
  assert sorted(_name(b) for b in BLOCKS) == ["core", "equinox", "flax", "flax", "haiku"]
