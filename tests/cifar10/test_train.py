"""End to end: train_and_evaluate through the real tfds code path, on fake data: the
files a run writes, the recipe's switches, resume, the step log, divergence, and a
loop that does not wait for the device."""

import json
import math
import pathlib

import jax
import numpy as np
import pytest

from experiments.cifar10 import epoch_loop
from experiments.cifar10.checkpoints import Checkpoints
from experiments.cifar10.configs import get_config
from experiments.cifar10.train import create_train_state, train_and_evaluate

REAL_DATA_DIR = pathlib.Path(__file__).resolve().parents[3] / "shared" / "tensorflow_datasets"
LAYERS = {f"{n}/kernel" for n in ("conv1", "conv2", "conv3", "dense1", "dense2")}

def _restore(workdir, config, epoch):
  _, target, _ = create_train_state(config, jax.random.key(config.seed))
  ckpts = Checkpoints(workdir / "checkpoints")
  try:
    return ckpts.restore(epoch, target)
  finally:
    ckpts.close()


def _jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.usefixtures("mock_cifar10")
def test_end_to_end_writes_config_metrics_summary_and_checkpoints(tmp_path, tiny):
  config = get_config("smoke", epochs=2, **tiny)
  summary = train_and_evaluate(config, tmp_path)

  assert json.loads((tmp_path / "config.json").read_text()) == config.to_json()
  rows = _jsonl(tmp_path / "metrics.jsonl")
  assert [r["epoch"] for r in rows] == [1, 2]
  for row in rows:
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
                "img_per_s", "lr", "fraction_at_bound", "largest_norm"):
      assert isinstance(row[key], float), key
    assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["fraction_at_bound"] <= 1
    assert set(row["neuron_norms"]) == LAYERS
    assert row["neuron_norms"]["dense1/kernel"]["max"] <= 3.0 * (1 + 1e-5)
  assert rows[1]["step"] == 2 * 8  # ceil(240 / 32): the partial batch is used.
  assert rows[1]["lr"] == pytest.approx(3e-4 / (1 + 1e-6 * 15))
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved == summary
  for key in ("test_accuracy", "test_loss", "num_params", "device"):
    assert key in saved
  assert summary["steps"] == 16 and summary["diverged"] is False
  assert Checkpoints(tmp_path / "checkpoints").latest_epoch() == 2
  assert not (tmp_path / "steps.jsonl").exists()  # No step log by default.


@pytest.mark.parametrize("overrides", [dict(max_norm=None), dict(constrain="all", max_norm=0.5)])
@pytest.mark.usefixtures("mock_cifar10")
def test_recipe_switches(tmp_path, tiny, overrides):
  train_and_evaluate(get_config("smoke", epochs=1, **tiny, **overrides), tmp_path)
  (row,) = _jsonl(tmp_path / "metrics.jsonl")
  assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
  if overrides.get("max_norm", 3.0) is None:
    assert row["fraction_at_bound"] is None and row["largest_norm"] is None
  if overrides.get("constrain") == "all":
    assert row["fraction_at_bound"] > 0
    for layer, stats in row["neuron_norms"].items():
      assert stats["max"] <= 0.5 * (1 + 1e-5), layer


@pytest.mark.usefixtures("mock_cifar10")
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_parameters(tmp_path, tiny):
  runs = {}
  for dtype in ("float32", "bfloat16"):
    config = get_config("smoke", epochs=1, dtype=dtype, **tiny)
    train_and_evaluate(config, tmp_path / dtype)
    (row,) = _jsonl(tmp_path / dtype / "metrics.jsonl")
    runs[dtype] = row, _restore(tmp_path / dtype, config, 1)
  (row32, state32), (row16, state16) = runs["float32"], runs["bfloat16"]
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(state16.params))
  # The same run up to bf16 rounding: close, but not the float32 numbers.
  assert row16["train_loss"] == pytest.approx(row32["train_loss"], rel=0.05)
  assert row16["train_loss"] != row32["train_loss"]
  kernel16, kernel32 = state16.params["dense1"]["kernel"], state32.params["dense1"]["kernel"]
  assert not np.array_equal(kernel16, kernel32)
  np.testing.assert_allclose(kernel16, kernel32, atol=1e-2)


@pytest.mark.usefixtures("mock_cifar10")
def test_resume_reaches_the_same_parameters_and_rows_bit_for_bit(tmp_path, tiny):
  config = get_config("smoke", epochs=3, log_every=2, **tiny)
  straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
  train_and_evaluate(config, straight)
  train_and_evaluate(get_config("smoke", epochs=2, log_every=2, **tiny), interrupted)
  with open(interrupted / "steps.jsonl", "a") as f:  # A row of a step the crash lost.
    f.write(json.dumps({"step": 18, "loss": 0.0}) + "\n")
  summary = train_and_evaluate(config, interrupted, resume=True)
  assert summary["resumed_from_epoch"] == 2

  # Epoch 2 of the straight run was saved (asynchronously) while epoch 3 trained
  # on donated buffers; it must still equal the interrupted run's last checkpoint.
  for epoch in (2, 3):
    a, b = _restore(straight, config, epoch), _restore(interrupted, config, epoch)
    jax.tree.map(np.testing.assert_array_equal, a, b)  # Params and Adam state, bit for bit.
  rows = [_jsonl(d / "metrics.jsonl") for d in (straight, interrupted)]
  assert [r["epoch"] for r in rows[1]] == [1, 2, 3]
  for ra, rb in zip(*rows):
    assert (ra["train_loss"], ra["val_loss"]) == (rb["train_loss"], rb["val_loss"])
  # The step log: only the missing rows were redone, and the lost one is gone.
  assert _jsonl(straight / "steps.jsonl") == _jsonl(interrupted / "steps.jsonl")


@pytest.mark.usefixtures("mock_cifar10")
def test_resume_of_an_empty_workdir_says_it_starts_from_scratch(tmp_path, tiny, capsys):
  summary = train_and_evaluate(get_config("smoke", epochs=1, **tiny), tmp_path / "w",
                               resume=True)
  assert "holds no checkpoint yet, so training starts from scratch" in capsys.readouterr().out
  assert summary["resumed_from_epoch"] is None


@pytest.mark.usefixtures("mock_cifar10")
def test_step_log_rows_every_n_steps_and_at_step_1(tmp_path, tiny):
  config = get_config("smoke", epochs=2, log_every=3, **tiny)  # 8 steps per epoch.
  summary = train_and_evaluate(config, tmp_path)
  rows = _jsonl(tmp_path / "steps.jsonl")
  assert [r["step"] for r in rows] == [1, 3, 6, 9, 12, 15]
  assert [r["epoch"] for r in rows] == [1, 1, 1, 2, 2, 2]
  for row in rows:
    assert 0 < row["loss"] < 10 and 0 <= row["accuracy"] <= 1
    assert row["lr"] == pytest.approx(3e-4 / (1 + 1e-6 * (row["step"] - 1)))
    assert 0 <= row["fraction_at_bound"] <= 1 and row["largest_norm"] > 0
    assert set(row["neuron_norms"]) == LAYERS
    assert row["neuron_norms"]["dense1/kernel"]["max"] <= 3.0 * (1 + 1e-5)
  assert summary["diverged"] is False and summary["diverged_at_step"] is None


@pytest.mark.parametrize("log_every", [1, 5, 0])
@pytest.mark.usefixtures("mock_cifar10")
def test_a_non_finite_loss_stops_the_run_within_a_read_interval(tmp_path, tiny, log_every):
  # SGD at 1e30 sends the weights to inf within a step or two: NaN loss.
  config = get_config("smoke", epochs=3, optimizer="sgd", learning_rate=1e30, max_norm=None,
                      log_every=log_every, **tiny)
  summary = train_and_evaluate(config, tmp_path)
  assert summary["diverged"] is True
  at = summary["diverged_at_step"]
  assert 1 <= at < 8  # Inside epoch 1 (8 steps).
  assert at <= summary["steps"] <= min(8, at + epoch_loop.READ_EVERY + 1)
  if log_every:
    rows = _jsonl(tmp_path / "steps.jsonl")
    assert rows[-1]["step"] == at and rows[-1]["loss"] is None  # NaN is written as null.
    assert all(r["loss"] is not None for r in rows[:-1])
    assert [r["step"] for r in rows[:-1]] == [s for s in range(1, at)
                                             if s == 1 or s % log_every == 0]
  (row,) = _jsonl(tmp_path / "metrics.jsonl")
  assert row["diverged_at_step"] == at and row["train_loss"] is None
  assert Checkpoints(tmp_path / "checkpoints").latest_epoch() is None  # No NaN checkpoint.
  assert json.loads((tmp_path / "summary.json").read_text()) == summary


class _HostReads:
  """Counts device-to-host reads: ``jax.Array`` conversions to host values, and calls of
  ``epoch_loop.read_host`` (the loop's one sanctioned way to read)."""

  CONVERSIONS = ("__array__", "__float__", "__int__", "__bool__", "__index__", "item",
                 "tolist")

  def __init__(self, monkeypatch):
    self.sanctioned, self.other, self._inside = 0, [], False
    array_type = type(jax.numpy.zeros(()))
    for name in self.CONVERSIONS:
      monkeypatch.setattr(array_type, name, self._counting(name, getattr(array_type, name)))
    read_host = epoch_loop.read_host

    def counted_read(tree):
      self.sanctioned += 1
      self._inside = True
      try:
        return read_host(tree)
      finally:
        self._inside = False
    monkeypatch.setattr(epoch_loop, "read_host", counted_read)
    train_epoch = epoch_loop.train_epoch

    def watched_epoch(*args, **kwargs):
      self.watching = True
      try:
        return train_epoch(*args, **kwargs)
      finally:
        self.watching = False
    self.watching = False
    monkeypatch.setattr(epoch_loop, "train_epoch", watched_epoch)

  def _counting(self, name, method):
    def wrapper(array, *args, **kwargs):
      if self.watching and not self._inside:
        self.other.append(name)
      return method(array, *args, **kwargs)
    return wrapper


@pytest.mark.parametrize("log_every", [4])
@pytest.mark.usefixtures("mock_cifar10")
def test_the_loop_reads_the_device_once_per_interval_and_nowhere_else(
    tmp_path, tiny, monkeypatch, log_every):
  monkeypatch.setattr(epoch_loop, "READ_EVERY", 3)
  monkeypatch.setattr(epoch_loop, "READ_INTERVAL_S", 1e9)
  reads = _HostReads(monkeypatch)
  epochs, steps = 2, 8
  train_and_evaluate(get_config("smoke", epochs=epochs, log_every=log_every, **tiny), tmp_path)
  assert reads.other == []  # No implicit read (float(x), np.asarray(x), ...) in the loop.
  per_epoch = math.ceil(steps / 3)  # Steps 3 and 6 (read one behind), and the last one.
  logged = 0 if not log_every else len([s for s in range(1, epochs * steps + 1)
                                        if s == 1 or s % log_every == 0])
  assert reads.sanctioned <= epochs * per_epoch + logged
  assert reads.sanctioned >= epochs * per_epoch


@pytest.mark.usefixtures("mock_cifar10")
def test_the_counter_sees_an_implicit_read_in_the_loop(tmp_path, tiny, monkeypatch):
  # A loop that converts a device value to a host value outside read_host is caught.
  reads = _HostReads(monkeypatch)
  norm_stats = epoch_loop.metrics.norm_stats

  def norm_stats_that_reads(params):
    stats = norm_stats(params)
    float(stats["dense1/kernel"]["max"])  # An implicit device-to-host read.
    return stats
  monkeypatch.setattr(epoch_loop.metrics, "norm_stats", norm_stats_that_reads)
  train_and_evaluate(get_config("smoke", epochs=1, log_every=4, **tiny), tmp_path)
  assert reads.other == ["__float__"] * 3  # Steps 1, 4 and 8.


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA_DIR.exists(),
                    reason=f"real CIFAR-10 not found at {REAL_DATA_DIR} (tfds-built array_record)")
def test_learns_on_real_cifar10(tmp_path):
  # Narrower than the article's network so that it fits the test budget on a
  # 2-core CPU; the point here is learning on real data, through the real pipeline.
  config = get_config("smoke", data_dir=str(REAL_DATA_DIR), conv_features=16,
                      dense_features=128, train_subset=10_000, eval_subset=1_000,
                      learning_rate=1e-3, download=False)
  summary = train_and_evaluate(config, tmp_path)
  assert summary["val_accuracy"] > 0.3, summary  # Chance is 0.1.
  assert summary["test_accuracy"] > 0.3, summary
