"""Data parallelism (experiments/cifar10/parallel.py) on 8 simulated CPU devices, and a
real 2-process jax.distributed run on localhost.

The claim under test: the device layout changes nothing but floating-point
summation order. Batches are the same examples bit for bit, N steps on 8 devices
(parameters replicated, or the dense1 kernel split on either axis) give the
parameters of 1 device, and 2 processes x 2 devices (with a multi-host resume)
give those of a single process.
"""

import dataclasses
import functools
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import maxnorm_jax as mnj
from experiments.cifar10 import get_config, input_pipeline, metrics, parallel, train_and_evaluate
from experiments.cifar10.__main__ import main, parse_config, parse_distributed
from experiments.cifar10.checkpoints import Checkpoints
from experiments.cifar10.train import _train_slice, create_train_state, train_step
from tests.test_cifar10_train import TINY

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "cifar10_distributed_worker.py"
# max_norm(1.0) holds the tiny dense1's neurons (initial norms about 1.4) at the bound from
# the first step on, so the projection, and its cross-device norms, are exercised.
CONFIG = get_config("smoke", conv_features=4, dense_features=16, batch_size=32, max_norm=1.0)


def _close(a, b, rtol=2e-5, atol=1e-6):
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=rtol, atol=atol), a, b)


class _FakeSource:
  """A tfds-like random-access source of ``n`` random examples."""

  def __init__(self, n, seed=0):
    rng = np.random.default_rng(seed)
    self.images = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    self.labels = rng.integers(0, 10, n).astype(np.int32)

  def __len__(self):
    return len(self.labels)

  def __getitems__(self, indices):
    return [{"image": self.images[i], "label": self.labels[i]} for i in indices]


def test_eight_simulated_devices_are_there():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  assert parallel.make_mesh().shape == {"data": 8}
  assert parallel.make_mesh(1).size == 1


@pytest.mark.parametrize("num_devices", [1, 3, 8])
def test_sharded_batches_equal_one_device_batches_bit_for_bit(num_devices):
  # 53 of 61 examples: padded to whole shards (3 x 18, 8 x 7) and to whole batches
  # (the last of 3 batches of 24 holds 5 examples and 19 padding slots).
  source, mesh = _FakeSource(61), parallel.make_mesh(num_devices)
  index = np.random.default_rng(1).permutation(61)[:53]
  sharded = parallel._shard_rows(source, index, mesh)
  assert sharded.images.sharding.spec == P("data")
  plain = input_pipeline.Split(jnp.asarray(source.images[index]),
                               jnp.asarray(source.labels[index]))
  order = input_pipeline.epoch_order(jax.random.key(0), 1, 53, batch_size=24)
  batch_fn = jax.jit(functools.partial(parallel.batch_at, batch_size=24, dtype=jnp.bfloat16,
                                       mesh=mesh))
  for i in range(input_pipeline.num_batches(53, 24)):
    got = batch_fn(sharded, order, i)
    want = input_pipeline.batch_at(plain, order, i, 24, jnp.bfloat16)
    assert got.images.sharding.spec == P("data")
    for g, w in zip(got, want):
      assert g.dtype == w.dtype
      np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
  assert float(got.weights.sum()) == 53 - 2 * 24


@pytest.mark.parametrize("axis", ["in", "out"])
def test_max_norm_is_exact_with_the_kernel_split_over_devices(axis):
  # Every neuron (a column) is far outside the ball. Split along "in", each device
  # holds 1/8 of every neuron; split along "out", whole neurons. Either way the norms
  # must cover whole neurons, as on one device.
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  params = {"dense1": {"kernel": jnp.asarray(rng.normal(size=(64, 16)), jnp.float32)}}
  grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
  tx = optax.chain(optax.adam(1e-1), mnj.max_norm(1.0))
  one = jax.jit(tx.update)(grads, tx.init(params), params)

  shardings = parallel.state_shardings(params, mesh, axis)
  spec = P("data", None) if axis == "in" else P(None, "data")
  assert shardings["dense1"]["kernel"].spec == spec
  placed = jax.device_put((params, grads), (shardings, shardings))
  state_shardings = parallel.state_shardings(tx.init(params), mesh, axis)
  state = jax.device_put(tx.init(params), state_shardings)
  mu = optax.tree_utils.tree_get(state, "mu")
  assert mu["dense1"]["kernel"].sharding.spec == spec  # Adam's state is split too.
  updates, new_state = jax.jit(lambda g, s, p: tx.update(g, s, p),
                               out_shardings=(shardings, state_shardings))(
                                   placed[1], state, placed[0])
  assert updates["dense1"]["kernel"].sharding.spec == spec
  assert updates["dense1"]["kernel"].addressable_shards[0].data.size == 64 * 16 // 8
  _close(updates, one[0])
  new_params = optax.apply_updates(params, jax.device_get(updates))
  norms = mnj.neuron_norms(new_params)["dense1"]["kernel"]
  np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
  assert float(optax.tree_utils.tree_get(new_state, "fraction_at_bound")) == 1.0

  # The test can tell: norms taken over each device's part of a neuron (what a
  # hand-written per-device update would do) give other parameters.
  if axis == "in":
    adam = optax.adam(1e-1)
    w = params["dense1"]["kernel"] + jax.jit(adam.update)(grads, adam.init(params))[0][
        "dense1"]["kernel"]
    per_device = jax.jit(jax.shard_map(
        lambda x: mnj.project_max_norm(x, 1.0), mesh=mesh, in_specs=P("data", None),
        out_specs=P("data", None)))(w)
    np.testing.assert_allclose(w * np.minimum(1, 1 / np.linalg.norm(w, axis=0)),
                               new_params["dense1"]["kernel"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(per_device, new_params["dense1"]["kernel"], rtol=1e-2)


def _train_steps(num_devices, shard_dense1, num_steps=2):
  """``num_steps`` jitted train steps of CONFIG's network, the data and state laid out
  over ``num_devices`` devices as train_and_evaluate lays them out."""
  mesh = parallel.make_mesh(num_devices)
  graphdef, state, tx = create_train_state(CONFIG, jax.random.key(0))
  sharding = parallel.state_shardings(state, mesh, shard_dense1)
  state = jax.device_put(state, sharding)
  data = parallel._shard_rows(_FakeSource(40), np.arange(40), mesh)
  step = functools.partial(train_step, graphdef=graphdef, tx=tx)
  train_fn = jax.jit(functools.partial(_train_slice, step=step, batch_size=CONFIG.batch_size,
                                       dtype=jnp.float32, mesh=mesh), donate_argnums=(0, 1),
                     **parallel.slice_shardings(mesh, sharding, train=True))
  order = input_pipeline.epoch_order(jax.random.key(1), 1, 40, CONFIG.batch_size)
  totals = metrics.zeros(with_telemetry=True)
  for i in range(num_steps):  # The 2nd batch is partial (8 examples, 24 padding).
    state, totals, _ = train_fn(state, totals, data, order, jnp.int32(i))
  return state, jax.device_get(totals)


@pytest.fixture(scope="module")
def one_device_steps():
  return _train_steps(1, None)


@pytest.mark.parametrize("shard_dense1", [None, "in", "out"])
def test_eight_devices_train_like_one(one_device_steps, shard_dense1):
  want_state, want_totals = one_device_steps
  state, totals = _train_steps(8, shard_dense1)
  kernel = state.params["dense1"]["kernel"]
  if shard_dense1 is None:
    assert kernel.sharding.is_fully_replicated
  else:
    assert kernel.addressable_shards[0].data.size == kernel.size // 8  # 1/8 per device.
    nu = optax.tree_utils.tree_get(state.opt_state, "nu")
    assert nu["dense1"]["kernel"].sharding == kernel.sharding
  assert totals["fraction_at_bound"] > 0  # The constraint was active.
  _close(jax.device_get(state), jax.device_get(want_state))
  _close(totals, want_totals)
  assert float(jnp.max(mnj.neuron_norms(state.params)["dense1"]["kernel"])) <= 1.0 + 1e-5


def _restore(workdir, epoch, config=None):
  """A checkpoint's state, restored onto this process's default device."""
  config = config or get_config("smoke", **TINY)
  _, target, _ = create_train_state(config, jax.random.key(0))
  ckpts = Checkpoints(workdir / "checkpoints")
  try:
    return jax.device_get(ckpts.restore(epoch, target))
  finally:
    ckpts.close()


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=36), "--batch-size 36 does not split evenly over 8 devices"),
    (dict(shard_dense1="out", dense_features=12), "--shard-dense1 out"),
    (dict(num_devices=9), "--num-devices 9 asked for, but there are 8 devices"),
])
def test_layouts_that_do_not_fit_are_clear_errors(tmp_path, overrides, message):
  with pytest.raises(parallel.ParallelConfigError, match=message):
    train_and_evaluate(get_config("smoke", **overrides), tmp_path / "w")
  assert not (tmp_path / "w").exists()  # Raised before anything was written.


def test_command_line_flags(tmp_path, capsys):
  config, _, _ = parse_config(["--workdir", "w", "--num-devices", "4", "--shard-dense1", "out",
                               "--distributed", "--num-processes", "2", "--process-id", "1"])
  assert (config.num_devices, config.shard_dense1) == (4, "out")
  assert parse_distributed(["--workdir", "w", "--distributed", "--coordinator-address",
                            "10.0.0.2:1234"]) == dict(coordinator_address="10.0.0.2:1234",
                                                      num_processes=None, process_id=None)
  assert parse_distributed(["--workdir", "w"]) is None
  for argv, error in [(["--process-id", "1"], "--process-id needs --distributed"),
                      (["--shard-dense1", "both"], "invalid choice"),
                      (["--num-devices", "0"], "--num-devices: must be > 0")]:
    with pytest.raises(SystemExit) as exit_info:
      main(["--workdir", str(tmp_path / "w")] + argv)
    assert exit_info.value.code == 2 and error in capsys.readouterr().err
  assert main(["--workdir", str(tmp_path / "w"), "--batch-size", "36", "--data-dir",
               str(tmp_path / "none")]) == 1
  assert "does not split evenly over 8 devices" in capsys.readouterr().err


def test_distributed_without_a_cluster_or_addresses_is_a_clear_error(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  result = subprocess.run(
      [sys.executable, "-m", "experiments.cifar10", "--workdir", str(tmp_path / "w"),
       "--distributed"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
  assert "pass --coordinator-address HOST:PORT" in result.stderr
  assert not (tmp_path / "w").exists()


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, config_overrides, *extra, cache_dir, meanwhile=None,
                       timeout=150):
  """Runs the worker as processes 0 and 1 of a jax.distributed job, 2 CPU devices each,
  calling ``meanwhile()`` (if given) while they run; kills both on timeout.
  Returns their outputs (stdout and stderr) and what ``meanwhile`` returned."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  # A persistent compilation cache: the resumed run reuses the first run's programs.
  env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  port, config_json = _free_port(), json.dumps(config_overrides)
  logs = [workdir.parent / f"{workdir.name}.process{i}.log" for i in range(2)]
  procs = []
  try:
    for i, log in enumerate(logs):
      with open(log, "w") as out:  # Files, not pipes: nothing blocks while `meanwhile` runs.
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(i), "2", str(port), str(workdir), config_json,
             *extra], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
    result = meanwhile() if meanwhile is not None else None
    for proc in procs:
      proc.wait(timeout=timeout)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  outputs = [log.read_text() for log in logs]
  for i, (proc, out) in enumerate(zip(procs, outputs)):
    assert proc.returncode == 0, f"process {i} failed:\n{out[-4000:]}"
  return outputs, result


def _summaries(output):
  return [json.loads(line[len("SUMMARY "):]) for line in output.splitlines()
          if line.startswith("SUMMARY ")]


@pytest.mark.usefixtures("mock_cifar10")
def test_two_processes_on_localhost_train_and_resume_like_one(tmp_path):
  # 2 processes x 2 devices, the kernel split over all 4: one epoch, then a multi-host
  # resume from its checkpoint for the second, against one process on one device.
  overrides = dict(epochs=1, **{**TINY, "train_subset": 64, "eval_subset": 40},
                   shard_dense1="out", max_norm=1.0)
  config = get_config("smoke", **{**overrides, "epochs": 2})
  outputs, single = _run_two_processes(  # The single-process run, while the 2 run.
      tmp_path / "multi", overrides, "2", cache_dir=tmp_path / "jax_cache",
      meanwhile=lambda: train_and_evaluate(dataclasses.replace(config, num_devices=1),
                                           tmp_path / "single"))

  summaries = [_summaries(out) for out in outputs]
  assert [len(s) for s in summaries] == [2, 2], outputs[0][-3000:]
  first, resumed = summaries[0]
  assert [s[1]["process_index"] for s in summaries] == [0, 1]
  assert resumed["num_processes"] == 2 and resumed["mesh_devices"] == 4
  assert (first["resumed_from_epoch"], resumed["resumed_from_epoch"]) == (None, 1)
  for key in ("val_loss", "test_loss", "test_accuracy"):
    np.testing.assert_allclose(resumed[key], single[key], rtol=1e-5)
  # Files are written once, by process 0; its console lines appear once.
  rows = [json.loads(line) for line in (tmp_path / "multi" / "metrics.jsonl").read_text()
          .splitlines()]
  assert [r["epoch"] for r in rows] == [1, 2]
  assert rows[0]["fraction_at_bound"] > 0  # The projection ran on the split kernel.
  assert json.loads((tmp_path / "multi" / "summary.json").read_text()) == \
      {k: v for k, v in resumed.items() if k != "process_index"}
  for text, count in (("epoch 1:", 1), ("epoch 2:", 1), ("CIFAR-10 |", 2)):
    assert (outputs[0].count(text), outputs[1].count(text)) == (count, 0), text
  for epoch in (1, 2):  # Orbax's multi-host checkpoints, restored in one process.
    _close(_restore(tmp_path / "multi", epoch, config),
           _restore(tmp_path / "single", epoch, config))
