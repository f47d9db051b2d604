"""The pipeline's step log (log_every), divergence stop and SGD option."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.cifar10 import get_config, train_and_evaluate
from experiments.cifar10.__main__ import parse_config
from experiments.cifar10.checkpoints import Checkpoints
from experiments.cifar10.optimizer import make_optimizer
from tests.test_cifar10_train import TINY

LAYERS = {f"{n}/kernel" for n in ("conv1", "conv2", "conv3", "dense1", "dense2")}


def _jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.usefixtures("mock_cifar10")
def test_step_log_rows_every_n_steps_and_at_step_1(tmp_path):
  config = get_config("smoke", epochs=2, log_every=3, **TINY)  # 8 steps per epoch.
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


@pytest.mark.usefixtures("mock_cifar10")
def test_no_step_log_by_default(tmp_path):
  train_and_evaluate(get_config("smoke", epochs=1, **TINY), tmp_path)
  assert not (tmp_path / "steps.jsonl").exists()


@pytest.mark.usefixtures("mock_cifar10")
def test_resume_redoes_only_the_missing_step_rows(tmp_path):
  config = get_config("smoke", epochs=2, log_every=2, **TINY)
  straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
  train_and_evaluate(config, straight)
  train_and_evaluate(get_config("smoke", epochs=1, log_every=2, **TINY), interrupted)
  with open(interrupted / "steps.jsonl", "a") as f:  # A row of a step the crash lost.
    f.write(json.dumps({"step": 10, "loss": 0.0}) + "\n")
  train_and_evaluate(config, interrupted, resume=True)
  assert _jsonl(straight / "steps.jsonl") == _jsonl(interrupted / "steps.jsonl")


@pytest.mark.usefixtures("mock_cifar10")
def test_a_non_finite_loss_stops_the_run_and_is_recorded(tmp_path):
  # SGD at 1e30 sends the weights to inf within a step or two: NaN loss.
  config = get_config("smoke", epochs=3, optimizer="sgd", learning_rate=1e30, max_norm=None,
                      log_every=1, **TINY)
  summary = train_and_evaluate(config, tmp_path)
  assert summary["diverged"] is True
  at = summary["diverged_at_step"]
  assert 1 <= at < 8 and summary["steps"] == at  # Stopped inside epoch 1 (8 steps).
  rows = _jsonl(tmp_path / "steps.jsonl")
  assert rows[-1]["step"] == at and rows[-1]["loss"] is None  # NaN is written as null.
  assert all(r["loss"] is not None for r in rows[:-1])
  (row,) = _jsonl(tmp_path / "metrics.jsonl")
  assert row["diverged_at_step"] == at and row["train_loss"] is None
  assert Checkpoints(tmp_path / "checkpoints").latest_epoch() is None  # No NaN checkpoint.
  assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_sgd_with_momentum_follows_the_heavy_ball_rule():
  # Constant gradient 1: velocity 1, 1 + m, 1 + m + m^2; update = -lr * velocity.
  config = get_config("article", optimizer="sgd", momentum=0.5, learning_rate=0.1,
                      lr_decay=0.0, max_norm=None)
  tx = make_optimizer(config)
  params = {"w": jnp.zeros(2)}
  state = tx.init(params)
  for expected in (1.0, 1.5, 1.75):
    updates, state = tx.update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_allclose(updates["w"], -0.1 * expected, rtol=1e-6)


def test_plain_sgd_with_zero_momentum():
  tx = make_optimizer(get_config("article", optimizer="sgd", momentum=0.0, learning_rate=0.1,
                                 lr_decay=0.0, max_norm=None))
  params = {"w": jnp.zeros(2)}
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-6)


def test_flags_for_the_new_fields():
  config, _, _ = parse_config(["--workdir", "w", "--optimizer", "sgd", "--momentum", "0.95",
                               "--log-every", "5"])
  assert (config.optimizer, config.momentum, config.log_every) == ("sgd", 0.95, 5)
  assert get_config("article").log_every == 0 and get_config("article").optimizer == "adam"


@pytest.mark.parametrize("overrides, message", [
    (dict(optimizer="rmsprop"), "optimizer must be 'adam' or 'sgd'"),
    (dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
    (dict(momentum=-0.1), r"momentum must be in \[0, 1\)"),
    (dict(log_every=-1), "log_every must be >= 0"),
])
def test_bad_values_are_clear_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    get_config("article", **overrides)


@pytest.mark.parametrize("argv, message", [
    (["--momentum", "1.5"], "momentum must be in"),
    (["--log-every", "-2"], "must be >= 0"),
    (["--optimizer", "rmsprop"], "invalid choice"),
])
def test_bad_flags_exit_with_code_2(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    parse_config(["--workdir", "w", *argv])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
