"""End to end: train_and_evaluate through the real tfds code path, resume, bad checkpoints."""

import hashlib
import json
import pathlib

import jax
import numpy as np
import pytest

from experiments.cifar10 import CheckpointError, get_config, train_and_evaluate
from experiments.cifar10.checkpoints import Checkpoints
from experiments.cifar10.train import create_train_state

REAL_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "tensorflow_datasets"

# A tiny network on fake data: these tests check the plumbing, not the architecture
# (tests/test_cifar10_model.py checks that). 300 fake examples per split:
# train 240 = 7 full batches of 32 and a partial one of 16.
TINY = dict(conv_features=4, dense_features=16, batch_size=32, val_size=60,
            train_subset=None, eval_subset=None, eval_batch_size=50)


def _restore(workdir, config, epoch):
  _, target, _ = create_train_state(config, jax.random.key(config.seed))
  ckpts = Checkpoints(workdir / "checkpoints")
  try:
    return ckpts.restore(epoch, target)
  finally:
    ckpts.close()


def _fingerprint(directory: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def test_end_to_end_writes_config_metrics_summary_and_checkpoints(mock_cifar10, tmp_path):
  config = get_config("smoke", epochs=2, **TINY)
  summary = train_and_evaluate(config, tmp_path)

  assert json.loads((tmp_path / "config.json").read_text()) == config.to_json()
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in rows] == [1, 2]
  for row in rows:
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
                "img_per_s", "lr", "fraction_at_bound", "largest_norm"):
      assert isinstance(row[key], float), key
    assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["fraction_at_bound"] <= 1
    assert set(row["neuron_norms"]) == {f"{n}/kernel" for n in
                                        ("conv1", "conv2", "conv3", "dense1", "dense2")}
    assert row["neuron_norms"]["dense1/kernel"]["max"] <= 3.0 * (1 + 1e-5)
  assert rows[1]["step"] == 2 * 8  # ceil(240 / 32): the partial batch is used.
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved == summary
  for key in ("test_accuracy", "test_loss", "num_params", "device"):
    assert key in saved
  assert Checkpoints(tmp_path / "checkpoints").latest_epoch() == 2


@pytest.mark.parametrize("overrides", [
    dict(max_norm=None), dict(constrain="all", max_norm=0.5), dict(dtype="bfloat16")])
def test_recipe_switches(mock_cifar10, tmp_path, overrides):
  train_and_evaluate(get_config("smoke", epochs=1, **TINY, **overrides), tmp_path)
  row = json.loads((tmp_path / "metrics.jsonl").read_text())
  assert row["train_loss"] is not None and row["val_loss"] is not None
  if overrides.get("max_norm", 3.0) is None:
    assert row["fraction_at_bound"] is None and row["largest_norm"] is None
  if overrides.get("constrain") == "all":
    assert row["fraction_at_bound"] > 0
    for layer, stats in row["neuron_norms"].items():
      assert stats["max"] <= 0.5 * (1 + 1e-5), layer


def test_resume_reaches_the_same_parameters_bit_for_bit(mock_cifar10, tmp_path):
  config = get_config("smoke", epochs=3, **TINY)
  straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
  train_and_evaluate(config, straight)
  train_and_evaluate(get_config("smoke", epochs=2, **TINY), interrupted)
  summary = train_and_evaluate(config, interrupted, resume=True)
  assert summary["resumed_from_epoch"] == 2

  # Epoch 2 of the straight run was saved (asynchronously) while epoch 3 trained
  # on donated buffers; it must still equal the interrupted run's last checkpoint.
  for epoch in (2, 3):
    a, b = _restore(straight, config, epoch), _restore(interrupted, config, epoch)
    jax.tree.map(np.testing.assert_array_equal, a, b)  # Params and Adam state, bit for bit.
  rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
          for d in (straight, interrupted)]
  assert [r["epoch"] for r in rows[1]] == [1, 2, 3]
  for ra, rb in zip(*rows):
    assert (ra["train_loss"], ra["val_loss"]) == (rb["train_loss"], rb["val_loss"])


def test_existing_checkpoints_need_resume_and_a_matching_config(mock_cifar10, tmp_path):
  train_and_evaluate(get_config("smoke", epochs=2, **TINY), tmp_path)
  before = _fingerprint(tmp_path)
  with pytest.raises(CheckpointError, match="--resume"):
    train_and_evaluate(get_config("smoke", epochs=3, **TINY), tmp_path)
  with pytest.raises(CheckpointError, match="different config.*max_norm"):
    train_and_evaluate(get_config("smoke", epochs=3, **TINY, max_norm=4.0), tmp_path,
                       resume=True)
  with pytest.raises(CheckpointError, match="beyond --epochs 1"):
    train_and_evaluate(get_config("smoke", epochs=1, **TINY), tmp_path, resume=True)
  assert _fingerprint(tmp_path) == before  # Nothing deleted or rewritten.


@pytest.mark.parametrize("damaged", ["state", "config"])
def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_deleted(
    mock_cifar10, tmp_path, damaged):
  train_and_evaluate(get_config("smoke", epochs=1, **TINY), tmp_path)
  for path in (tmp_path / "checkpoints" / "1" / damaged).rglob("*"):
    if path.is_file() and path.name != "commit_success.txt":
      path.write_bytes(b"\x00garbage")
  before = _fingerprint(tmp_path)
  with pytest.raises(CheckpointError, match="could not be read.*Nothing was deleted"):
    train_and_evaluate(get_config("smoke", epochs=2, **TINY), tmp_path, resume=True)
  assert _fingerprint(tmp_path) == before


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
