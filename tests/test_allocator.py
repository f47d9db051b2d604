"""The training commands start on tcmalloc: the packages that `python -m` imports before
their __main__ leave JAX unloaded, and the re-exec preloads tcmalloc exactly once."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from experiments import allocator

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python(code: str, **env: str) -> str:
  base = {k: v for k, v in os.environ.items()
          if k not in (allocator.ENV_OPT_OUT, "MAXNORM_MALLOC_REEXEC", "LD_PRELOAD")}
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env},
                        capture_output=True, text=True, check=True).stdout.strip()


def test_the_packages_run_before_main_import_no_jax():
  loaded = _python("import sys, experiments.cifar10, experiments.claims, experiments.allocator; "
                   "print(sorted({m.split('.')[0] for m in sys.modules} & "
                   "{'jax', 'jaxlib', 'flax', 'numpy', 'tensorflow'}))")
  assert loaded == "[]"


@pytest.mark.skipif(allocator._library_path() is None, reason="tcmalloc is not installed")
def test_the_reexec_preloads_tcmalloc_once():
  code = ("from experiments import allocator; allocator.reexec_with_tcmalloc(); "
          "allocator.reexec_with_tcmalloc(); print(allocator.active_allocator())")
  assert _python(code) == "tcmalloc"
  assert _python(code, **{allocator.ENV_OPT_OUT: "system"}) == "system"


@pytest.mark.parametrize("package", ["cifar10", "claims"])
def test_python_m_runs_the_command_after_choosing_the_malloc(package):
  out = subprocess.run([sys.executable, "-m", f"experiments.{package}", "--help"], cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout
  assert out.startswith(f"usage: python -m experiments.{package} ")
