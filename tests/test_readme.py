"""The README's example runs as printed."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_prints_what_its_comments_say():
  text = README.read_text()
  block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
  expected = [m.group(1) for m in re.finditer(r"^print\(.*\)\s+# (\S+)$", block, re.M)]
  assert expected, "the README example should show its output in comments"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(block, str(README), "exec"), {})
  assert out.getvalue().split() == expected
