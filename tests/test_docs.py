"""The documentation's examples run as pasted into a fresh interpreter, and its links resolve.

* Every ```python block of README.md, PACKAGE.md (the package index page) and docs/*.md runs
  in a fresh namespace, and what it prints must be the ``# comments`` of its ``print(...)``
  lines, in order (whitespace aside): the comment on the line itself or, for output of
  several lines (a table), the comment lines right below it.
* Every docstring example of the public API runs with no globals but its own imports.
* The API reference documents every public name; relative links point at files that exist.

These need the repository's files, not its source: CI also runs them against the installed
wheel (.ci/run).
"""

import contextlib
import doctest
import io
import pathlib
import re

import pytest

import maxnorm_jax as mnj

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "PACKAGE.md", *sorted((ROOT / "docs").glob("*.md"))]
NEEDS = ("flax", "equinox", "haiku")  # a block importing one of these is skipped without it
# print(...)  # output            or            print(...)
#                                                # output line 1
#                                                # output line 2
PRINTED = re.compile(r"^[ \t]*print\(.*\)(?:[ \t]+# (.+)$|[ \t]*\n((?:[ \t]*# .*(?:\n|$))+))",
                     re.M)


def _blocks():
  for page in PAGES:
    text = page.read_text()
    for match in re.finditer(r"```python\n(.*?)```", text, re.S):
      line = text.count("\n", 0, match.start()) + 2
      yield pytest.param(page, match.group(1), id=f"{page.relative_to(ROOT)}:{line}")


def _library(block):
  return next((m for m in NEEDS if re.search(rf"^(import|from) {m}\b", block, re.M)), "core")


@pytest.mark.parametrize(("page", "block"), list(_blocks()))
def test_example_prints_what_its_comments_say(page, block):
  library = _library(block)
  if library != "core":
    pytest.importorskip(library)
  expected = [inline or re.sub(r"^[ \t]*# ", "", below, flags=re.M)
              for inline, below in PRINTED.findall(block)]
  assert expected, f"each example in {page.name} should show its output in comments"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(block, str(page), "exec"), {})  # a fresh namespace, as a fresh interpreter
  squash = lambda text: "".join(text.split())
  assert squash(out.getvalue()) == squash("".join(expected))


def test_getting_started_shows_every_library():
  text = (ROOT / "docs" / "getting_started.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  assert sorted(_library(b) for b in blocks) == ["core", "equinox", "flax", "flax", "haiku"]


# ---------------------------------------------------------------- docstring examples

def _documented():
  """Each public object with a docstring example, by its public name."""
  objects = [(name, getattr(mnj, name)) for name in mnj.__all__]
  objects.append(("maxnorm_jax", mnj))
  for name in ("nnx.constraints_from", "nnx.max_norm", "nnx.min_max_norm", "nnx.unit_norm",
               "linen.max_norm", "linen.min_max_norm", "linen.unit_norm",
               "haiku.max_norm", "haiku.min_max_norm", "haiku.unit_norm"):
    module, function = name.split(".")
    try:
      objects.append((name, getattr(getattr(mnj, module), function)))
    except ModuleNotFoundError:  # no flax or haiku: its test is skipped below
      objects.append((name, None))
  return objects


@pytest.mark.parametrize(
    ("name", "obj"),
    _documented(),
    ids=[n for n, _ in _documented()])
def test_docstring_example_runs_in_a_fresh_namespace(name, obj):
  if obj is None:
    pytest.skip(f"maxnorm_jax.{name.split('.')[0]} needs a library that is not installed")
  finder = doctest.DocTestFinder(recurse=False)
  runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
  tests = [t for t in finder.find(obj, name, globs={}) if t.examples]
  if not tests:
    pytest.skip(f"{name} has no example")
  report = io.StringIO()
  for test in tests:
    test.globs = {}
    runner.run(test, out=report.write)
  assert runner.failures == 0, report.getvalue()


# ---------------------------------------------------------------- the pages themselves

def test_api_reference_documents_every_public_name():
  api = (ROOT / "docs" / "api.md").read_text()
  documented = set(re.findall(r"^\.\. auto(?:function|class|data):: ([\w.]+)", api, re.M))
  assert set(mnj.__all__) <= documented
  assert {f"maxnorm_jax.{name}" for name in (
      "nnx.constraints_from", "nnx.max_norm", "nnx.min_max_norm", "nnx.unit_norm",
      "linen.max_norm", "linen.min_max_norm", "linen.unit_norm",
      "haiku.max_norm", "haiku.min_max_norm", "haiku.unit_norm")} <= documented


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "PACKAGE.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
  text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
  for target in re.findall(r"\]\(([^)\s]+)\)", text):
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
      continue
    path = target.split("#")[0]
    assert (page.parent / path).exists(), f"{page.name} links to missing {target}"


def test_package_page_has_only_absolute_links():
  """PACKAGE.md is the index page of the package, where relative links break."""
  links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "PACKAGE.md").read_text())
  assert all(link.startswith("https://") for link in links), links


def test_citation_names_this_version():
  cff = (ROOT / "CITATION.cff").read_text()
  assert re.search(rf"^version: {re.escape(mnj.__version__)}$", cff, re.M)
