"""A real 2-process ``jax.distributed`` run on localhost (experiments/cifar10/distributed.py).

2 processes x 2 CPU devices each, with a multi-host resume, give the results of a
single process; files and console lines come from process 0 only.
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
import numpy as np
import pytest

from experiments.cifar10.checkpoints import Checkpoints
from experiments.cifar10.configs import get_config
from experiments.cifar10.train import create_train_state, train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")


def _close(a, b, rtol=2e-5, atol=1e-6):
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=rtol, atol=atol), a, b)


def _restore(workdir, epoch, config):
  """A checkpoint's state, restored onto this process's default device."""
  _, target, _ = create_train_state(config, jax.random.key(0))
  ckpts = Checkpoints(workdir / "checkpoints")
  try:
    return jax.device_get(ckpts.restore(epoch, target))
  finally:
    ckpts.close()


def test_distributed_without_a_cluster_or_addresses_is_a_clear_error(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  result = subprocess.run(
      [sys.executable, "-m", "experiments.cifar10", "--workdir", str(tmp_path / "w"),
       "--distributed"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
  assert "pass --coordinator-address HOST:PORT" in result.stderr
  assert not (tmp_path / "w").exists()


def test_a_peer_that_never_comes_is_one_line_after_the_timeout(tmp_path):
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  result = subprocess.run(
      [sys.executable, "-m", "experiments.cifar10", "--workdir", str(tmp_path / "w"),
       "--distributed", "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2",
       "--process-id", "0", "--distributed-timeout", "3"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1, result.stderr
  lines = result.stderr.splitlines()
  assert f"waits up to 3 s for 2 processes at 127.0.0.1:{port}" in lines[0]
  (error,) = [line for line in lines if line.startswith("error:")]
  assert error.startswith(f"error: --distributed: 2 processes did not all join at "
                          f"127.0.0.1:{port} within 3 s (--distributed-timeout).")
  assert "Traceback" not in result.stderr
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
def test_two_processes_on_localhost_train_and_resume_like_one(tmp_path, tiny):
  # 2 processes x 2 devices, the kernel split over all 4: one epoch, then a multi-host
  # resume from its checkpoint for the second, against one process on one device.
  overrides = dict(epochs=1, **{**tiny, "train_subset": 64, "eval_subset": 40},
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
