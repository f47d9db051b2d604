"""The public surface: every name imports, and the core needs only jax and optax."""

import subprocess
import sys
import types

import pytest

import maxnorm_jax as mnj

PUBLIC = {
    "max_norm", "min_max_norm", "unit_norm", "non_neg", "project_max_norm",
    "project_min_max_norm", "project_unit_norm", "project_non_neg", "neuron_norms",
    "paths_matching", "path_to_str", "NormConstraintState", "NonNegState",
}


def test_every_public_name_imports():
  assert set(mnj.__all__) == PUBLIC
  # Nothing public is left out of __all__ (submodules aside)...
  listed = {name for name, value in vars(mnj).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)}
  assert listed == PUBLIC
  for name in mnj.__all__:
    # ...and each name is the library's own, with a docstring.
    assert getattr(mnj, name).__module__.startswith("maxnorm_jax._"), name
    assert getattr(mnj, name).__doc__, f"{name} has no docstring"


def test_optional_submodules_load_on_first_use():
  code = ("import sys, maxnorm_jax as mnj; before = 'flax' in sys.modules; "
          "tx = mnj.nnx.constraints_from; print(before, 'flax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout.strip()
  assert out == "False True"
  with pytest.raises(AttributeError, match="has no attribute 'flax'"):
    mnj.flax  # noqa: B018


def test_core_imports_only_jax_and_optax():
  heavy = ["flax", "tensorflow", "tensorflow_datasets", "keras", "orbax", "torch",
           "matplotlib", "tqdm", "equinox", "haiku"]
  code = ("import sys, maxnorm_jax; "
          f"print([m for m in {heavy!r} if m in sys.modules])")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout.strip()
  assert out == "[]", f"importing maxnorm_jax pulled in {out}"


def test_typed_package():
  from importlib import resources
  assert resources.files("maxnorm_jax").joinpath("py.typed").is_file()


def test_docstring_examples_import_what_they_use():
  """Each example runs as if pasted into a fresh interpreter: no module globals."""
  import doctest
  import importlib

  finder = doctest.DocTestFinder()
  runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
  failed = []
  for name in ("_constraints", "_tree", "_numerics", "nnx"):
    for test in finder.find(importlib.import_module(f"maxnorm_jax.{name}"), globs={}):
      test.globs = {}
      if runner.run(test, out=lambda _: None).failed:
        failed.append(test.name)
  assert not failed, failed
