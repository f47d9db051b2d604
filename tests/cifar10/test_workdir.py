"""What a run may do with its workdir: one writer, a finished run is never overwritten
without --overwrite, a summary describes the records beside it, and compute time
accumulates across resumes."""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from experiments.cifar10 import epoch_loop, workdir
from experiments.cifar10 import train as train_module
from experiments.cifar10.configs import get_config
from experiments.cifar10.train import train_and_evaluate
from experiments.cifar10.workdir import WorkdirError

REPO = pathlib.Path(__file__).resolve().parents[2]


def snapshot(root):
  """Every file under ``root``: its bytes and mode, by relative path."""
  return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode)
          for p in sorted(pathlib.Path(root).rglob("*")) if p.is_file()}


def run_cli(*flags, cwd=REPO):
  """``python -m experiments.cifar10 FLAGS`` in its own process; returns the result."""
  env = dict(os.environ, PYTHONPATH=str(REPO), MAXNORM_MALLOC="system",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, "-m", "experiments.cifar10", *flags], cwd=cwd,
                        capture_output=True, text=True, timeout=300, env=env)


def error_line(result):
  """The one ``error:`` line of a failed command (and no traceback)."""
  assert "Traceback" not in result.stderr, result.stderr
  (line,) = [s for s in result.stderr.splitlines() if s.startswith("error:")]
  return line


@pytest.fixture
def finished(tmp_path_factory, tiny, mock_cifar10):
  """A finished 1-epoch run whose checkpoints were deleted (as a sweep does), and its
  config."""
  del mock_cifar10
  config = get_config("smoke", epochs=1, **tiny)
  path = tmp_path_factory.mktemp("finished") / "w"
  train_and_evaluate(config, path)
  shutil.rmtree(path / "checkpoints")
  return path, config


@pytest.mark.parametrize("flags, message", [
    ((), "already holds a run's records (metrics.jsonl, summary.json). Pass --resume"),
    (("--resume",), "holds a finished run (summary.json) but no checkpoint to continue it"),
])
def test_a_finished_run_is_not_overwritten_without_overwrite(finished, flags, message):
  path, _ = finished
  before = snapshot(path)
  result = run_cli("--preset", "smoke", "--workdir", str(path), "--seed", "3",
                   "--data-dir", str(path / "no_data"), *flags)
  assert result.returncode == 1
  assert message in error_line(result) and "Nothing was changed" in error_line(result)
  assert snapshot(path) == before


@pytest.mark.usefixtures("mock_cifar10")
def test_overwrite_keeps_the_old_run_until_the_new_one_is_done(finished, tiny, monkeypatch):
  path, config = finished
  old = snapshot(path)

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  with monkeypatch.context() as patch:
    patch.setattr(epoch_loop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
      train_and_evaluate(config, path, overwrite=True)
  assert snapshot(path / workdir.REPLACED) == old  # Set aside, whole.
  assert not (path / "summary.json").exists()
  summary = train_and_evaluate(get_config("smoke", epochs=2, **tiny), path, overwrite=True)
  assert not (path / workdir.REPLACED).exists()
  assert summary["epochs"] == 2 and summary["resumed_from_epoch"] is None
  rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in rows] == [1, 2]


@pytest.mark.usefixtures("mock_cifar10")
def test_a_summary_describes_the_records_beside_it_and_time_accumulates(tmp_path, tiny,
                                                                        monkeypatch):
  path = tmp_path / "w"
  first = train_and_evaluate(get_config("smoke", epochs=2, **tiny), path)
  three = get_config("smoke", epochs=3, **tiny)
  with monkeypatch.context() as patch:  # Interrupted in epoch 3.
    patch.setattr(epoch_loop, "train_epoch", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
      train_and_evaluate(three, path, resume=True)
  assert not (path / "summary.json").exists()  # Not the 2-epoch summary next to 3 epochs.
  second = train_and_evaluate(three, path, resume=True)
  assert second["epochs"] == 3 and second["resumed_from_epoch"] == 2
  assert second["total_seconds"] > first["total_seconds"]
  third = train_and_evaluate(three, path, resume=True)  # Finished: nothing to train.
  assert third["steps"] == second["steps"] and third["test_loss"] == second["test_loss"]
  assert third["total_seconds"] > second["total_seconds"]  # Accumulated, not replaced.


@pytest.mark.usefixtures("mock_cifar10")
def test_a_run_stopped_before_its_summary_keeps_the_time_of_its_saved_epochs(tmp_path, tiny,
                                                                            monkeypatch):
  path = tmp_path / "w"
  config = get_config("smoke", epochs=2, **tiny)
  with monkeypatch.context() as patch:  # Stopped after epoch 2's checkpoint, before the test.
    patch.setattr(train_module, "evaluate", _stop_at_call(3, train_module.evaluate))
    with pytest.raises(KeyboardInterrupt):
      train_and_evaluate(config, path)
  assert not (path / "summary.json").exists()
  rows = (path / "metrics.jsonl").read_text().splitlines()
  epochs = [json.loads(line)["seconds"] for line in rows]
  start = time.perf_counter()
  summary = train_and_evaluate(config, path, resume=True)  # Nothing left to train.
  resumed = time.perf_counter() - start
  # The resume's own time, and the first attempt's epochs (and more: its compilation).
  assert summary["resumed_from_epoch"] == 2
  assert summary["total_seconds"] > resumed + sum(epochs)
  assert not (path / ".earlier_seconds").exists()  # Forgotten once the summary is there.


def _stop_at_call(n, evaluate):
  """``evaluate`` that raises KeyboardInterrupt at its ``n``-th call (with 2 epochs: the
  test split's, after each epoch's validation)."""
  calls = []
  def wrapped(*args, **kwargs):
    calls.append(None)
    if len(calls) == n:
      raise KeyboardInterrupt
    return evaluate(*args, **kwargs)
  return wrapped


def test_an_empty_workdir_flag_exits_2_and_writes_nothing(tmp_path):
  result = run_cli("--preset", "smoke", "--workdir", "", cwd=tmp_path)
  assert result.returncode == 2
  assert "argument --workdir: must not be empty" in result.stderr.splitlines()[-1]
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(WorkdirError, match="--workdir is empty"):
    workdir.check_workdir(pathlib.Path(""))


HOLDER = """
import pathlib, sys, time
from experiments.cifar10 import workdir
with workdir.exclusive(pathlib.Path(sys.argv[1])):
  print("held", flush=True)
  time.sleep(120)
"""


def test_one_writer_per_workdir_and_a_killed_holder_does_not_block(tmp_path):
  path = tmp_path / "w"
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
  try:
    assert holder.stdout.readline() == "held\n"
    before = snapshot(path)
    result = run_cli("--preset", "smoke", "--workdir", str(path),
                     "--data-dir", str(tmp_path / "no_data"))
    assert result.returncode == 1
    line = error_line(result)
    assert f"is in use by pid {holder.pid} on host " in line and "Nothing was changed" in line
    assert snapshot(path) == before
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
  with workdir.exclusive(path):  # The kernel released the dead holder's lock.
    assert f"pid {os.getpid()} " in (path / workdir.LOCK).read_text()
  with workdir.exclusive(path), workdir.exclusive(path):  # Re-entrant in one process.
    pass


def test_a_failed_start_leaves_no_workdir_behind(tmp_path):
  with pytest.raises(RuntimeError), workdir.exclusive(tmp_path / "a" / "b"):
    raise RuntimeError
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, where", [
    ('{"epoch": 1}\n{"epoch": \n', "metrics.jsonl, line 2: not a JSON object"),
    ('{"loss": 1.0}\n', "metrics.jsonl, line 1: no integer 'epoch'"),
])
def test_damaged_records_stop_a_resume_with_file_and_line(tmp_path, content, where):
  path = tmp_path / "w"
  path.mkdir()
  (path / "metrics.jsonl").write_text(content)
  before = snapshot(path)
  result = run_cli("--preset", "smoke", "--workdir", str(path), "--resume",
                   "--data-dir", str(tmp_path / "no_data"))
  assert result.returncode == 1
  assert f"{path / where}. Nothing was changed" in error_line(result)
  assert snapshot(path) == before


TINY_FLAGS = ("--preset", "smoke", "--conv-features", "4", "--dense-features", "16",
              "--batch-size", "32", "--val-size", "60", "--train-subset", "240",
              "--eval-subset", "60", "--eval-batch-size", "50")


def test_a_failed_checkpoint_write_is_one_line_and_exit_1(tmp_path):
  # RLIMIT_FSIZE makes the kernel fail the checkpoint's first large write (EFBIG), as a
  # full disk fails it (ENOSPC); the small JSON records still fit.
  path = tmp_path / "w"
  env = dict(os.environ, MOCK_RUN_FILE_SIZE_LIMIT=str(64 * 1024), MAXNORM_MALLOC="system",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  result = subprocess.run([sys.executable, str(REPO / "tests" / "cifar10" / "mock_run.py"),
                           "cli", *TINY_FLAGS, "--workdir", str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-2000:]
  assert error_line(result) == (
      f"error: The checkpoint of epoch 1 could not be saved in {path / 'checkpoints'} (File "
      f"too large). The checkpoints before it are kept: free some space, then continue with "
      f"--resume.")
  assert len(result.stderr.splitlines()) < 10, result.stderr  # No page of Orbax's logs.
  assert not (path / "summary.json").exists()


@pytest.mark.usefixtures("mock_cifar10")
def test_a_failed_metrics_append_is_one_line_and_exit_1(tmp_path, tiny, monkeypatch, capsys):
  from experiments.cifar10 import records  # noqa: PLC0415
  from experiments.cifar10.main import main  # noqa: PLC0415

  def full_disk_open(path, mode="r", *args, **kwargs):
    if mode == "a":
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return open(path, mode, *args, **kwargs)
  monkeypatch.setattr(records, "open", full_disk_open, raising=False)
  path = tmp_path / "w"
  assert main([*TINY_FLAGS, "--workdir", str(path)]) == 1
  (line,) = [s for s in capsys.readouterr().err.splitlines() if s.startswith("error:")]
  assert line == (f"error: {path / 'metrics.jsonl'}: cannot be written (No space left on "
                  f"device). The records of the epochs before are kept; continue with --resume "
                  f"once it can be written.")
