"""The command line: flags, and the errors a user can run into."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from experiments.cifar10.__main__ import main, parse_config
from experiments.cifar10.configs import PRESETS

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_flags_override_the_preset():
  config, workdir, resume = parse_config([
      "--preset", "smoke", "--workdir", "w", "--epochs", "3", "--batch-size", "64",
      "--learning-rate", "1e-3", "--max-norm", "4", "--constrain", "all", "--dtype", "bfloat16",
      "--seed", "7", "--train-subset", "100", "--data-dir", "d", "--resume"])
  assert (workdir, resume) == ("w", True)
  assert (config.epochs, config.batch_size, config.learning_rate) == (3, 64, 1e-3)
  assert (config.max_norm, config.constrain, config.dtype) == (4.0, "all", "bfloat16")
  assert (config.seed, config.train_subset) == (7, 100)
  assert config.data_dir == "d" and config.eval_subset == PRESETS["smoke"].eval_subset
  assert parse_config(["--workdir", "w", "--no-max-norm"])[0].max_norm is None
  assert parse_config(["--workdir", "w"])[0] == PRESETS["article"]


@pytest.mark.parametrize("argv, message", [
    ([], "--workdir"),
    (["--epochs", "0"], "--epochs: must be > 0"),
    (["--epochs", "two"], "--epochs: expected an integer"),
    (["--batch-size", "1.5"], "--batch-size"),
    (["--learning-rate", "-1"], "--learning-rate: must be > 0"),
    (["--max-norm", "0"], "--max-norm: must be > 0"),
    (["--max-norm", "inf"], "use --no-max-norm"),
    (["--max-norm", "3", "--no-max-norm"], "not allowed with"),
    (["--dtype", "float16"], "invalid choice"),
    (["--constrain", "conv1"], "invalid choice"),
    (["--preset", "huge"], "invalid choice"),
    (["--seed", "-1"], "--seed: must be >= 0"),
    (["--lr-decay", "-1"], "--lr-decay: must be >= 0"),
    (["--train-subset", "0"], "--train-subset: must be > 0"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_flags_exit_with_code_2_and_say_why(argv, message, capsys, tmp_path):
  if argv:
    argv = ["--workdir", str(tmp_path / "w")] + argv
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "w").exists()


def _run_cli(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "experiments.cifar10", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_missing_data_is_one_clear_paragraph_without_traceback(tmp_path):
  result = _run_cli("--preset", "smoke", "--workdir", str(tmp_path / "w"),
                    "--data-dir", str(tmp_path / "no_data"), "--no-download")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(error) == 1, result.stderr
  assert "pip install tensorflow" in error[0] and "--data-dir" in error[0]
  assert not (tmp_path / "no_data").exists()


def test_missing_data_with_download_allowed_is_a_clear_error(tmp_path, capsys):
  # Without TensorFlow (as here) tfds cannot build; with it but offline, it cannot download.
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed, so tfds would try a real download here")
  assert main(["--preset", "smoke", "--workdir", str(tmp_path / "w"),
               "--data-dir", str(tmp_path / "no_data")]) == 1
  assert "pip install tensorflow" in capsys.readouterr().err


def test_corrupt_checkpoint_exits_with_code_1_and_keeps_it(tmp_path, capsys):
  damaged = tmp_path / "w" / "checkpoints" / "1"
  damaged.mkdir(parents=True)
  (damaged / "state").write_bytes(b"\x00garbage")
  assert main(["--workdir", str(tmp_path / "w"), "--resume",
               "--data-dir", str(tmp_path / "no_data")]) == 1
  err = capsys.readouterr().err
  assert "could not be read" in err and "Nothing was deleted" in err and "Traceback" not in err
  assert (damaged / "state").read_bytes() == b"\x00garbage"
