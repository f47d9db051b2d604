"""The public surface: every name imports, and the core needs only jax and optax."""

import subprocess
import sys
import types

import pytest

import maxnorm_jax as mnj

PUBLIC = {
    "max_norm", "min_max_norm", "unit_norm", "non_neg", "project_max_norm",
    "project_min_max_norm", "project_unit_norm", "project_non_neg", "neuron_norms",
    "paths_matching", "path_to_str", "NormConstraintState", "NonNegState", "describe",
    "Plan", "PlanRow",
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


@pytest.mark.parametrize(("use", "library"), [("mnj.nnx.constraints_from", "flax"),
                                              ("mnj.linen.max_norm", "flax"),
                                              ("mnj.haiku.max_norm", "haiku")])
def test_optional_submodules_load_on_first_use(use, library):
  pytest.importorskip(library)
  code = (f"import sys, maxnorm_jax as mnj; before = {library!r} in sys.modules; "
          f"tx = {use}; print(before, {library!r} in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout.strip()
  assert out == "False True"
  with pytest.raises(AttributeError, match="has no attribute 'flax'"):
    mnj.flax  # noqa: B018


def test_nnx_without_flax_says_how_to_install_it():
  code = ("import sys; sys.modules['flax'] = None; import maxnorm_jax as mnj; "
          "mnj.nnx")  # None in sys.modules: `import flax` fails as if it were not installed
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert run.returncode == 1
  assert "ModuleNotFoundError" in run.stderr
  assert "pip install 'maxnorm-jax[nnx]'" in run.stderr.splitlines()[-1]


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

