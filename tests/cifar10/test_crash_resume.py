"""kill -9 at random moments, then --resume: the run ends bit-identical to a straight one.

Each trial starts a run in its own process, kills it with SIGKILL after a random
delay (during start-up, an epoch, a checkpoint save or the final evaluation; a
separate test kills it between Orbax's commit of a checkpoint and its checksums),
then resumes it (killing it again, while it is not finished, until it is), and
compares the final checkpoint (parameters and Adam's state) and every per-epoch
metric with those of a run that was never interrupted.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments.cifar10.checkpoints import Checkpoints
from experiments.cifar10.configs import get_config
from experiments.cifar10.train import create_train_state

WORKER = pathlib.Path(__file__).with_name("mock_run.py")
REPO = pathlib.Path(__file__).resolve().parents[2]
MAX_KILLS = 4  # Per trial.


def _env(cache_dir):
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)  # Later starts skip compilation.
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["MAXNORM_MALLOC"] = "system"
  return env


def _run(workdir, overrides, env, *, resume=False, kill_after=None):
  """Runs the worker; kills it after ``kill_after`` seconds if it is still running.
  Returns True if the run finished by itself (False: it was killed, by us or itself)."""
  args = [sys.executable, str(WORKER), str(workdir), json.dumps(overrides)]
  args += ["--resume"] if resume else []
  with open(workdir.parent / f"{workdir.name}.log", "a") as log:
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
      proc.wait(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return False
  if proc.returncode == -signal.SIGKILL:  # It killed itself (MOCK_RUN_KILL_BEFORE_CHECKSUMS).
    return False
  assert proc.returncode == 0, (workdir.parent / f"{workdir.name}.log").read_text()[-3000:]
  return True


def _final_state(workdir, config):
  _, target, _ = create_train_state(config, jax.random.key(config.seed))
  ckpts = Checkpoints(workdir / "checkpoints", create=False)
  try:
    return jax.device_get(ckpts.restore(config.epochs, target))
  finally:
    ckpts.close()


def _metrics(workdir):
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: r[k] for k in ("epoch", "train_loss", "train_accuracy", "val_loss",
                             "val_accuracy", "fraction_at_bound", "largest_norm")}
          for r in rows]


def _kill_and_resume_trials(tmp_path, tiny, trials, seed, **extra):
  overrides = dict(tiny, epochs=3, num_devices=1, **extra)
  config = get_config("smoke", **overrides)
  env = _env(tmp_path / "jax_cache")
  straight = tmp_path / "straight"
  assert _run(straight, overrides, env)  # Also fills the compilation cache.
  start = time.perf_counter()  # Time a run as the trials' runs start: from a warm cache.
  assert _run(tmp_path / "timed", overrides, env)
  duration = time.perf_counter() - start
  want_state, want_metrics = _final_state(straight, config), _metrics(straight)
  summary = json.loads((straight / "summary.json").read_text())
  rng = np.random.default_rng(seed)
  kills = []  # Per trial, the delays after which its processes were killed.
  for trial in range(trials):
    workdir = tmp_path / f"trial{trial}"
    finished, resume = False, False
    kills.append([])
    while not finished:
      # A process may outlive the timed run (machine load) or finish first (a resume
      # skips the epochs it has), so a trial is killed zero or more times; after
      # MAX_KILLS, the next process may finish, so that a loaded machine ends a trial.
      delay = float(rng.uniform(0.2, duration))
      finished = _run(workdir, overrides, env, resume=resume,
                      kill_after=delay if len(kills[-1]) < MAX_KILLS else None)
      if not finished:
        kills[-1].append(delay)
      resume = True
    jax.tree.map(np.testing.assert_array_equal, _final_state(workdir, config), want_state)
    assert _metrics(workdir) == want_metrics, trial
    got = json.loads((workdir / "summary.json").read_text())
    assert (got["test_loss"], got["test_accuracy"]) == (summary["test_loss"],
                                                       summary["test_accuracy"])
  return kills


def test_kill_9_between_commit_and_checksums_then_resume_ends_bit_identical(tmp_path, tiny):
  # The window a random delay rarely hits: Orbax has committed the epoch's checkpoint
  # and the process dies before its sha256.json is written (the worker kills itself).
  overrides = dict(tiny, epochs=3, num_devices=1)
  config = get_config("smoke", **overrides)
  env = _env(tmp_path / "jax_cache")
  straight = tmp_path / "straight"
  assert _run(straight, overrides, env)
  want_state, want_metrics = _final_state(straight, config), _metrics(straight)
  for epoch in (1, 3):  # The first epoch (no checksummed one yet) and the last.
    workdir = tmp_path / f"window{epoch}"
    assert not _run(workdir, overrides, dict(env, MOCK_RUN_KILL_BEFORE_CHECKSUMS=str(epoch)))
    assert not (workdir / "checkpoints" / str(epoch) / "sha256.json").exists()
    assert _run(workdir, overrides, env, resume=True)
    log = (workdir.parent / f"{workdir.name}.log").read_text()
    assert f"The checkpoint of epoch {epoch} has no sha256.json: its save did not finish" in log
    assert "restored unverified" not in log and "Traceback" not in log
    assert (workdir / "unverified_checkpoints" / str(epoch)).is_dir()  # Kept aside.
    jax.tree.map(np.testing.assert_array_equal, _final_state(workdir, config), want_state)
    assert _metrics(workdir) == want_metrics


def test_kill_9_then_resume_ends_bit_identical(tmp_path, tiny):
  # With dropout: its masks are a function of the seed and the step, so a resumed
  # run draws the ones the uninterrupted run drew.
  kills = _kill_and_resume_trials(tmp_path, tiny, trials=2, seed=0, dropout=0.5,
                                  conv_dropout=0.25)
  assert any(kills)  # At least one run was killed before it finished.


@pytest.mark.slow
def test_many_kill_9_points_then_resume_end_bit_identical(tmp_path, tiny):
  kills = _kill_and_resume_trials(tmp_path, tiny, trials=12, seed=1)
  delays = sorted(round(k, 1) for trial in kills for k in trial)
  print(f"{len(delays)} kills in {sum(map(bool, kills))} of 12 trials, at {delays} s; all "
        f"resumed bit-identical")
  assert sum(map(bool, kills)) >= 8  # Most trials were interrupted at least once.


