"""Checkpoints: they refuse to resume the wrong run, and a damaged one (any flipped byte
or truncation, checked against the checksums written at save time) is a clear error
that restores, deletes and rewrites nothing."""

import dataclasses
import hashlib
import logging
import pathlib
import shlex
import shutil

import jax
import numpy as np
import pytest

from experiments.cifar10 import cli
from experiments.cifar10.checkpoints import CHECKSUMS, CheckpointError, Checkpoints
from experiments.cifar10.configs import get_config
from experiments.cifar10.main import main
from experiments.cifar10.train import create_train_state, train_and_evaluate


def _fingerprint(directory: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.usefixtures("mock_cifar10")
def test_existing_checkpoints_need_resume_and_a_matching_config(tmp_path, tiny):
  train_and_evaluate(get_config("smoke", epochs=2, **tiny), tmp_path)
  before = _fingerprint(tmp_path)
  with pytest.raises(CheckpointError, match="--resume"):
    train_and_evaluate(get_config("smoke", epochs=3, **tiny), tmp_path)
  with pytest.raises(CheckpointError, match="different config.*max_norm"):
    train_and_evaluate(get_config("smoke", epochs=3, **tiny, max_norm=4.0), tmp_path,
                       resume=True)
  with pytest.raises(CheckpointError, match="beyond --epochs 1"):
    train_and_evaluate(get_config("smoke", epochs=1, **tiny), tmp_path, resume=True)
  assert _fingerprint(tmp_path) == before  # Nothing deleted or rewritten.


@pytest.mark.usefixtures("mock_cifar10")
@pytest.mark.parametrize("damaged", ["state", "config"])
def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_deleted(tmp_path, tiny, damaged):
  train_and_evaluate(get_config("smoke", epochs=1, **tiny), tmp_path)
  for path in (tmp_path / "checkpoints" / "1" / damaged).rglob("*"):
    if path.is_file() and path.name != "commit_success.txt":
      path.write_bytes(b"\x00garbage")
  before = _fingerprint(tmp_path)
  with pytest.raises(CheckpointError, match="is corrupt: the checksum of .* does not match.*"
                                            "nothing was deleted"):
    train_and_evaluate(get_config("smoke", epochs=2, **tiny), tmp_path, resume=True)
  assert _fingerprint(tmp_path) == before


def _first_checkpoint(tmp_path, tiny):
  config = get_config("smoke", epochs=1, **tiny)
  train_and_evaluate(config, tmp_path / "w")
  return config, tmp_path / "w" / "checkpoints"


def _restore_or_error(directory, config):
  """The restored state of checkpoint 1, or the CheckpointError that refused it."""
  _, target, _ = create_train_state(config, jax.random.key(config.seed))
  ckpts = Checkpoints(directory, create=False)
  try:
    ckpts.check_config(1, config)
    return jax.device_get(ckpts.restore(1, target))
  except CheckpointError as e:
    return e
  finally:
    ckpts.close()


def _damage(directory: pathlib.Path, rng: np.random.Generator) -> str:
  """Flips bytes in, or truncates, one random file of checkpoint 1; says what it did."""
  files = sorted(p for p in (directory / "1").rglob("*") if p.is_file())
  path = files[rng.integers(len(files))]
  data = bytearray(path.read_bytes())
  if rng.random() < 0.3 or not data:
    cut = int(rng.integers(len(data))) if data else 0
    path.write_bytes(bytes(data[:cut]))
    return f"truncated {path.name} to {cut} of {len(data)} bytes"
  count = int(rng.integers(1, min(400, len(data)) + 1))
  for offset in rng.integers(len(data), size=count):
    data[offset] ^= int(rng.integers(1, 256))
  path.write_bytes(bytes(data))
  return f"flipped {count} bytes of {path.relative_to(directory)}"


def _fault_trials(tmp_path, tiny, trials, seed):
  config, original = _first_checkpoint(tmp_path, tiny)
  clean = _restore_or_error(original, config)
  assert not isinstance(clean, Exception), clean
  rng = np.random.default_rng(seed)
  outcomes = []
  for trial in range(trials):
    copy = tmp_path / f"trial{trial}"
    shutil.copytree(original, copy)
    what = _damage(copy, rng)
    before = _fingerprint(copy)
    result = _restore_or_error(copy, config)
    assert _fingerprint(copy) == before, what  # Nothing was changed on disk.
    if isinstance(result, CheckpointError):
      assert "Nothing was" in str(result) and "\n" not in str(result), str(result)
      outcomes.append("detected")
    else:  # Not detected: then it must be the very same state.
      jax.tree.map(np.testing.assert_array_equal, result, clean)
      outcomes.append(f"identical ({what})")
    shutil.rmtree(copy)
  return outcomes


@pytest.mark.usefixtures("mock_cifar10")
def test_random_byte_flips_and_truncations_are_detected(tmp_path, tiny):
  outcomes = _fault_trials(tmp_path, tiny, trials=24, seed=0)
  assert outcomes == ["detected"] * 24, outcomes


@pytest.mark.slow
@pytest.mark.usefixtures("mock_cifar10")
def test_many_random_byte_flips_and_truncations_are_detected(tmp_path, tiny):
  outcomes = _fault_trials(tmp_path, tiny, trials=300, seed=1)
  assert outcomes == ["detected"] * 300, [o for o in outcomes if o != "detected"]


@pytest.mark.usefixtures("mock_cifar10")
def test_a_flipped_checkpoint_stops_resume_with_exit_1_and_changes_nothing(
    tmp_path, tiny, capsys):
  config, directory = _first_checkpoint(tmp_path, tiny)
  biggest = max((p for p in (directory / "1").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  data = bytearray(biggest.read_bytes())
  for offset in range(0, min(len(data), 400 * 7), 7):  # 400 bytes, size kept.
    data[offset] ^= 0xFF
  biggest.write_bytes(bytes(data))
  before = _fingerprint(tmp_path / "w")
  argv = shlex.split(cli.equivalent_command(dataclasses.replace(config, epochs=2),
                                            tmp_path / "w"))[3:]
  assert main([*argv, "--resume"]) == 1
  err = capsys.readouterr().err
  assert "is corrupt: the checksum of" in err and "Traceback" not in err, err
  assert _fingerprint(tmp_path / "w") == before


@pytest.mark.usefixtures("mock_cifar10")
def test_a_checkpoint_without_checksums_is_restored_with_a_warning_unless_the_workdir_has_them(
    tmp_path, tiny, capsys):
  config, directory = _first_checkpoint(tmp_path, tiny)
  (directory / "1" / CHECKSUMS).unlink()
  assert isinstance(_restore_or_error(directory, config), CheckpointError)  # Marker: refused.
  (directory / "CHECKSUMMED").unlink()  # As a workdir written before checksums existed.
  restored = _restore_or_error(directory, config)
  assert not isinstance(restored, Exception), restored
  assert "restored unverified" in capsys.readouterr().err


@pytest.mark.usefixtures("mock_cifar10")
def test_a_save_that_did_not_finish_is_set_aside_and_the_run_resumes_before_it(
    tmp_path, tiny, capsys):
  # As a kill between Orbax's commit of epoch 2 and its checksums leaves the workdir.
  train_and_evaluate(get_config("smoke", epochs=2, **tiny), tmp_path / "w")
  unfinished = tmp_path / "w" / "checkpoints" / "2"
  (unfinished / CHECKSUMS).unlink()
  kept = _fingerprint(unfinished)
  capsys.readouterr()
  summary = train_and_evaluate(get_config("smoke", epochs=2, **tiny), tmp_path / "w",
                               resume=True)
  aside = tmp_path / "w" / "unverified_checkpoints" / "2"
  (line,) = [s for s in capsys.readouterr().err.splitlines() if CHECKSUMS in s]
  assert line == (f"The checkpoint of epoch 2 has no {CHECKSUMS}: its save did not finish. "
                  f"It was moved, unverified, to {aside}; resuming from the checkpoint "
                  f"before it.")
  assert _fingerprint(aside) == kept  # Set aside, not deleted.
  assert summary["resumed_from_epoch"] == 1
  assert (tmp_path / "w" / "checkpoints" / "2" / CHECKSUMS).exists()  # Epoch 2 trained again.


def test_unretrieved_writes_of_a_failed_save_are_not_logged(caplog):
  """After a failed save, asyncio's "exception was never retrieved" records of the writes
  into the checkpoint directory are dropped; others are still logged."""
  import asyncio
  import gc

  from experiments.cifar10.orbax_errors import ignore_unretrieved_writes

  directory = "/nonexistent/w/checkpoints"

  async def fail_two():
    loop = asyncio.get_running_loop()
    loop.create_future().set_exception(ValueError(f"Error writing {directory}/1/state"))
    loop.create_future().set_exception(ValueError("another failure"))

  ignore_unretrieved_writes(directory)
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    asyncio.run(fail_two())
    gc.collect()
  messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
  assert not any(directory in m for m in messages)
  assert any("another failure" in m for m in messages)
