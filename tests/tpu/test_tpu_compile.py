"""The article's steps compile for TPU, fit the chip and call no host; the benchmark's
bad input gets a one-line error."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import cost_model, tpu_compile
from benchmarks.article_step import article_optimizer, jitted_train_step
from experiments.cifar10.models import CNN


def test_article_train_step_compiles_for_tpu_fits_v5e_and_calls_no_host(v5e):
  generation, chip, devices = v5e
  cost = tpu_compile.article_step_cost(devices[0], dtype="float32", constrained=True)
  assert generation == "v5e" and chip.hbm_bytes == 16e9
  # The forward and backward pass of 128 images: ~237 GFLOP (three times the forward's).
  assert 2.0e11 < cost.flops < 3.0e11
  assert cost.peak_bytes < chip.hbm_bytes
  assert cost.host_ops == ()


def test_host_ops_finds_a_callback_in_a_tpu_program(v5e):
  _, _, devices = v5e
  rep = jax.sharding.NamedSharding(jax.sharding.Mesh(devices[:1], ("data",)),
                                   jax.sharding.PartitionSpec())

  def f(x):
    return jax.pure_callback(lambda a: np.asarray(a) * 2,
                             jax.ShapeDtypeStruct(x.shape, x.dtype), x) + 1

  x = jax.ShapeDtypeStruct((8,), jnp.float32, sharding=rep)
  with_callback = jax.jit(f).trace(x).lower().compile().as_text()
  without = jax.jit(lambda x: x * 2 + 1).trace(x).lower().compile().as_text()
  assert cost_model.host_ops(with_callback)
  assert cost_model.host_ops(without) == []


def test_kernel_passes_count_adams_seven(v5e):
  # Adam reads g, m, v, p and writes m, v, p: the unit of the "kernel passes" column.
  cost = tpu_compile.optimizer_cost("optax.adam", v5e[2][0])
  assert cost.bytes_accessed / tpu_compile.KERNEL_BYTES == pytest.approx(7.0, abs=0.05)
  assert cost.temporaries < 1e6


def test_train_step_exports_for_cuda_and_tpu():
  # jax.export lowers for both platforms without libtpu or a GPU, and refuses custom
  # calls that are not stable (host callbacks among them).
  made = {}
  tx = article_optimizer(constrained=True)

  def init():
    made["graphdef"], state = nnx.split(CNN(conv_impl="xla", rngs=nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    return params, tx.init(params)

  params, opt_state = jax.eval_shape(init)
  exported = jax.export.export(jitted_train_step(made["graphdef"], tx),
                               platforms=("cuda", "tpu"))(
      params, opt_state, jax.ShapeDtypeStruct((128, 32, 32, 3), jnp.float32),
      jax.ShapeDtypeStruct((128,), jnp.int32))
  assert exported.platforms == ("cuda", "tpu")
  assert "callback" not in exported.mlir_module()


def _run(*args: str, hide_libtpu: bool = False) -> subprocess.CompletedProcess:
  hide = "import sys; sys.modules['libtpu'] = None; " if hide_libtpu else ""
  code = (f"{hide}import runpy; "
          "runpy.run_module('benchmarks.tpu_compile', run_name='__main__', alter_sys=True)")
  return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                        timeout=120)


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
  # libtpu and the CUDA plugin write log lines to stderr as they load; ours start with the
  # module's name, and there is one.
  return [line for line in result.stderr.splitlines()
          if line.startswith("benchmarks.tpu_compile")]


def test_unknown_topology_is_one_line_listing_the_known_ones():
  result = _run("--topology", "v9z:2x2")
  assert result.returncode == 2
  assert result.stdout == ""
  [line] = _error_lines(result)
  assert "'v9z:2x2'" in line
  assert all(name in line for name in cost_model.KNOWN_TOPOLOGIES)


def test_shape_that_libtpu_does_not_know_is_one_line(v5e):
  result = _run("--topology", "v5e:3x7")
  assert result.returncode == 2
  assert result.stdout == ""
  [line] = _error_lines(result)
  assert "'v5e:3x7'" in line and "v5e:2x2" in line


def test_missing_libtpu_gives_the_install_command():
  result = _run("--rows", "optimizer", hide_libtpu=True)
  assert result.returncode == 1
  assert result.stdout == ""
  [line] = _error_lines(result)
  assert f'pip install "jax[tpu]=={jax.__version__}"' in line


def test_article_train_step_compiles_for_an_h100_without_one():
  if cost_model.cuda_plugin_missing():
    pytest.skip(f"JAX's CUDA plugin is not installed: {cost_model.INSTALL_CUDA}")
  # In a process of its own: the plugin must be set up before JAX picks its backends.
  result = _run("--topology", "h100", "--rows", "train", "--dtypes", "float32")
  assert result.returncode == 0, result.stderr
  rows = [line.split(" | ") for line in result.stdout.splitlines()
          if line.startswith("| train step, Adam + max_norm(3), float32")]
  [[_, flops, gigabytes, arguments, _, peak, _, host, _]] = rows
  assert "NVIDIA H100 80GB HBM3" in result.stdout
  assert flops == "n/a"  # Not counted in cuBLAS and cuDNN calls, so not shown.
  # At least a read of the params and Adam's slots and a write of them back.
  assert float(gigabytes) * 1e3 > 2 * 0.9 * float(arguments.replace(",", ""))
  assert peak.endswith("(yes)")
  assert host == "none"


def test_missing_cuda_plugin_gives_the_install_command():
  if not cost_model.cuda_plugin_missing():
    pytest.skip("JAX's CUDA plugin is installed here")
  result = _run("--topology", "h100")
  assert result.returncode == 1
  assert result.stdout == ""
  [line] = _error_lines(result)
  assert cost_model.INSTALL_CUDA in line
