"""The public surface: every name imports, and the core needs only jax and optax."""

import subprocess
import sys

import maxnorm_jax as mnj

PUBLIC = {
    "max_norm", "min_max_norm", "unit_norm", "non_neg", "project_max_norm",
    "project_min_max_norm", "project_unit_norm", "project_non_neg", "neuron_norms",
    "paths_matching", "path_to_str", "NormConstraintState", "NonNegState",
}


def test_every_public_name_imports():
  assert set(mnj.__all__) == PUBLIC
  for name in mnj.__all__:
    assert getattr(mnj, name) is not None, name
    assert getattr(mnj, name).__doc__, f"{name} has no docstring"


def test_core_imports_only_jax_and_optax():
  heavy = ["flax", "tensorflow", "tensorflow_datasets", "keras", "orbax", "torch",
           "matplotlib", "tqdm"]
  code = ("import sys, maxnorm_jax; "
          f"print([m for m in {heavy!r} if m in sys.modules])")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout.strip()
  assert out == "[]", f"importing maxnorm_jax pulled in {out}"


def test_typed_package():
  from importlib import resources
  assert resources.files("maxnorm_jax").joinpath("py.typed").is_file()
