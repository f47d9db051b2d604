"""The command line: flags generated from Config, their inverse, and the errors a user
can run into."""

import dataclasses
import os
import pathlib
import shlex
import subprocess
import sys
import typing

import pytest

from experiments.cifar10 import cli
from experiments.cifar10.configs import PRESETS, Config, choices, get_config
from experiments.cifar10.main import main

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_flags_override_the_preset():
  config, workdir, resume, distributed, overwrite = cli.parse([
      "--preset", "smoke", "--workdir", "w", "--epochs", "3", "--batch-size", "64",
      "--learning-rate", "1e-3", "--max-norm", "4", "--constrain", "all", "--dtype", "bfloat16",
      "--seed", "7", "--train-subset", "100", "--data-dir", "d", "--resume"])
  assert (workdir, resume, distributed, overwrite) == ("w", True, None, False)
  assert cli.parse(["--workdir", "w", "--overwrite"]).overwrite is True
  assert (config.epochs, config.batch_size, config.learning_rate) == (3, 64, 1e-3)
  assert (config.max_norm, config.constrain, config.dtype) == (4.0, "all", "bfloat16")
  assert (config.seed, config.train_subset) == (7, 100)
  assert config.data_dir == "d" and config.eval_subset == PRESETS["smoke"].eval_subset
  assert cli.parse(["--workdir", "w", "--no-max-norm"]).config.max_norm is None
  assert cli.parse(["--workdir", "w"]).config == PRESETS["article"]
  config = cli.parse(["--workdir", "w", "--optimizer", "sgd", "--momentum", "0.95",
                      "--log-every", "5", "--no-download"]).config
  assert (config.optimizer, config.momentum, config.log_every) == ("sgd", 0.95, 5)
  assert config.download is False


def test_every_config_field_has_a_flag_with_help_and_literal_choices():
  parser = cli.build_parser()
  actions = {a.dest: a for a in parser._actions}
  hints = typing.get_type_hints(Config)
  for field in dataclasses.fields(Config):
    action = actions[field.name]
    assert field.metadata["help"] and action.help, field.name
    allowed = choices(hints[field.name])
    if allowed is not None:
      assert set(action.choices) == set(allowed) - {None}, field.name


CONFIGS = [
    PRESETS["article"], PRESETS["smoke"],
    get_config("article", max_norm=None, optimizer="sgd", momentum=0.0, learning_rate=0.123456789,
               constrain="all", dtype="bfloat16", seed=3, train_subset=5000, eval_subset=2000,
               conv_features=32, dense_features=256, log_every=7, download=False,
               data_dir="/some dir/x", num_devices=4, shard_dense1="out", conv_impl="xla",
               lr_decay=0.0, adam_eps=1e-8, split_seed=2, val_size=100, eval_batch_size=64,
               keep_checkpoints=1, epochs=40, batch_size=64),
    get_config("smoke", max_norm=1.5, epochs=2),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_equivalent_command_reads_back_as_the_same_config(config):
  command = cli.equivalent_command(config, "/tmp/w d")
  words = shlex.split(command)
  assert words[:3] == ["python", "-m", "experiments.cifar10"]
  invocation = cli.parse(words[3:])
  assert invocation.config == config and invocation.workdir == "/tmp/w d"


@pytest.mark.parametrize("argv, message", [
    ([], "--workdir"),
    (["--epochs", "0"], "--epochs: must be >= 1"),
    (["--epochs", "two"], "--epochs: expected an integer"),
    (["--batch-size", "1.5"], "--batch-size: expected an integer"),
    (["--learning-rate", "-1"], "--learning-rate: must be finite and > 0"),
    (["--learning-rate", "nan"], "--learning-rate: must be finite and > 0"),
    (["--max-norm", "0"], "--max-norm: must be finite and > 0"),
    (["--max-norm", "inf"], "use --no-max-norm"),
    (["--max-norm", "3", "--no-max-norm"], "not allowed with"),
    (["--dtype", "float16"], "invalid choice"),
    (["--constrain", "conv1"], "invalid choice"),
    (["--optimizer", "rmsprop"], "invalid choice"),
    (["--preset", "huge"], "invalid choice"),
    (["--seed", "-1"], "--seed: must be in [0, 2**63)"),
    (["--seed", str(2**63)], "--seed: must be in [0, 2**63)"),
    (["--split-seed", str(2**64)], "--split-seed: must be in [0, 2**63)"),
    (["--val-size", "50000"], "--val-size: must be in [1, 50000)"),
    (["--lr-decay", "1e300"], "--lr-decay: overflows float32"),
    (["--learning-rate", "1e39"], "--learning-rate: overflows float32"),
    (["--adam-eps", "1e-46"], "--adam-eps: underflows float32"),
    (["--max-norm", "1e-40"], "--max-norm: underflows float32"),
    (["--workdir", ""], "argument --workdir: must not be empty"),
    (["--lr-decay", "-1"], "--lr-decay: must be finite and >= 0"),
    (["--momentum", "1.5"], "--momentum: must be in [0, 1)"),
    (["--dropout", "1"], "--dropout: must be in [0, 1)"),
    (["--dropout", "-0.1"], "--dropout: must be in [0, 1)"),
    (["--conv-dropout", "1.5"], "--conv-dropout: must be in [0, 1)"),
    (["--dropout", "half"], "--dropout"),
    (["--log-every", "-2"], "--log-every: must be >= 0"),
    (["--train-subset", "0"], "--train-subset: must be >= 1"),
    (["--num-devices", "0"], "--num-devices: must be >= 1"),
    (["--shard-dense1", "both"], "invalid choice"),
    (["--process-id", "1"], "--process-id needs --distributed"),
    (["--resume", "--overwrite"], "not allowed with argument --resume"),
    (["--distributed-timeout", "5"], "--distributed-timeout needs --distributed"),
    (["--distributed", "--distributed-timeout", "0"], "--distributed-timeout: must be >= 1"),
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


def test_distributed_flags():
  invocation = cli.parse(["--workdir", "w", "--num-devices", "4", "--shard-dense1", "out",
                          "--distributed", "--num-processes", "2", "--process-id", "1"])
  assert (invocation.config.num_devices, invocation.config.shard_dense1) == (4, "out")
  assert invocation.distributed == dict(coordinator_address=None, num_processes=2, process_id=1,
                                       timeout_s=None)
  assert cli.parse(["--workdir", "w", "--distributed", "--coordinator-address",
                    "10.0.0.2:1234", "--distributed-timeout", "30"]).distributed == dict(
                        coordinator_address="10.0.0.2:1234", num_processes=None,
                        process_id=None, timeout_s=30)


def _run_cli(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "experiments.cifar10", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_corrupt_checkpoint_exits_with_code_1_and_keeps_it(tmp_path, capsys):
  damaged = tmp_path / "w" / "checkpoints" / "1"
  damaged.mkdir(parents=True)
  (damaged / "state").write_bytes(b"\x00garbage")
  assert main(["--workdir", str(tmp_path / "w"), "--resume",
               "--data-dir", str(tmp_path / "no_data")]) == 1
  err = capsys.readouterr().err
  assert "could not be read" in err and "Nothing was deleted" in err and "Traceback" not in err
  assert (damaged / "state").read_bytes() == b"\x00garbage"


def test_a_workdir_that_is_a_file_is_one_clear_line(tmp_path):
  workdir = tmp_path / "w"
  workdir.write_text("not a directory")
  result = _run_cli("--preset", "smoke", "--workdir", str(workdir))
  assert result.returncode == 1, result.stderr
  assert "Traceback" not in result.stderr
  (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert "is not a directory" in error
  assert workdir.read_text() == "not a directory"


@pytest.mark.parametrize("workdir", ["/proc/maxnorm_test_run", "/proc/self/status/w"])
def test_an_unwritable_workdir_is_one_clear_line(workdir, capsys):
  assert main(["--preset", "smoke", "--workdir", workdir]) == 1
  err = capsys.readouterr().err
  assert "error: --workdir" in err and "Traceback" not in err, err
  assert not os.path.exists(workdir)


def test_a_command_names_a_path_under_home_as_home_so_its_reader_can_run_it():
  import pathlib
  import subprocess
  home = pathlib.Path.home()
  config = get_config("article", data_dir=str(home / "data"), seed=3)
  text = cli.equivalent_command(config, home / "maxnorm-runs" / "run-1")
  assert '--workdir "$HOME/maxnorm-runs/run-1"' in text and str(home) not in text
  # A shell expands it back to the path; parse then reads the same config.
  words = subprocess.run(["sh", "-c", f"printf '%s\\n' {text}"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
  invocation = cli.parse(words[3:])
  assert invocation.config == config and invocation.workdir == str(home / "maxnorm-runs" /
                                                                   "run-1")
  # Anything else, or a name a shell would split, is quoted as it is.
  assert cli.shell_join(["a b", "/tmp/x", str(home / "a b")]) == (
      f"'a b' /tmp/x '{home}/a b'")
