"""Command line: ``python -m experiments.cifar10 --preset article --workdir W [flags]``.

Flags pick a preset and override single fields of it; then
``train_and_evaluate(config, workdir)`` does the work. Bad flags exit with
code 2 (argparse), missing data or an unusable checkpoint with code 1 and a
one-paragraph message.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from experiments.cifar10.checkpoints import CheckpointError
from experiments.cifar10.configs import PRESETS, Config, get_config
from experiments.cifar10.input_pipeline import DataUnavailableError
from experiments.cifar10.parallel import ParallelConfigError, initialize_distributed
from experiments.cifar10.train import train_and_evaluate

__all__ = ["build_parser", "main", "parse_config", "parse_distributed"]


_KIND_NAMES = {int: "an integer", float: "a number"}


def _number(kind: type, *, allow_zero: bool = False) -> Callable[[str], Any]:
  """An argparse type: ``kind(text)``, which must be > 0 (>= 0 with ``allow_zero``)."""
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected {_KIND_NAMES[kind]}, got {text!r}") from None
    if not math.isfinite(value):
      hint = " (for c = inf, use --no-max-norm)" if kind is float else ""
      raise argparse.ArgumentTypeError(f"must be finite, got {text!r}{hint}")
    if not (value >= 0 if allow_zero else value > 0):
      raise argparse.ArgumentTypeError(f"must be {'>=' if allow_zero else '>'} 0, got {text!r}")
    return value
  parse.__name__ = kind.__name__
  return parse


def build_parser() -> argparse.ArgumentParser:
  """The command's flags; unset flags keep the preset's value."""
  p = argparse.ArgumentParser(
      prog="python -m experiments.cifar10",
      description="Train the article's max-norm CNN on CIFAR-10 and evaluate it.",
      argument_default=argparse.SUPPRESS)
  p.add_argument("--preset", choices=sorted(PRESETS), default="article",
                 help="starting configuration (default: article)")
  p.add_argument("--workdir", required=True,
                 help="output directory: config.json, metrics.jsonl, summary.json, checkpoints/")
  p.add_argument("--data-dir", dest="data_dir",
                 help="tfds data directory (default: tfds's, which honours $TFDS_DATA_DIR)")
  p.add_argument("--no-download", dest="download", action="store_false",
                 help="fail instead of letting tfds download and build missing data")
  p.add_argument("--resume", action="store_true", default=False,
                 help="continue from the last checkpoint in --workdir")
  p.add_argument("--epochs", type=_number(int))
  p.add_argument("--batch-size", dest="batch_size", type=_number(int))
  p.add_argument("--learning-rate", dest="learning_rate", type=_number(float))
  p.add_argument("--lr-decay", dest="lr_decay", type=_number(float, allow_zero=True),
                 help="Keras legacy decay: lr / (1 + decay * step)")
  p.add_argument("--optimizer", choices=("adam", "sgd"),
                 help="adam (the article) or sgd with --momentum")
  p.add_argument("--momentum", type=_number(float, allow_zero=True),
                 help="SGD momentum (default 0.9; only with --optimizer sgd)")
  norm = p.add_mutually_exclusive_group()
  norm.add_argument("--max-norm", dest="max_norm", type=_number(float), metavar="C",
                    help="max-norm bound c (default 3.0)")
  norm.add_argument("--no-max-norm", dest="max_norm", action="store_const", const=None,
                    help="train without the constraint")
  p.add_argument("--constrain", choices=("dense1", "all"),
                 help="constrain the Dense(1024) kernel only (the article) or every kernel")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype")
  p.add_argument("--seed", type=_number(int, allow_zero=True),
                 help="initialisation and shuffling seed")
  p.add_argument("--train-subset", dest="train_subset", type=_number(int), metavar="N",
                 help="train on the first N training examples only")
  p.add_argument("--eval-subset", dest="eval_subset", type=_number(int), metavar="N",
                 help="evaluate on the first N validation and test examples only")
  p.add_argument("--conv-features", dest="conv_features", type=_number(int),
                 help="convolution channels (the article: 128)")
  p.add_argument("--conv-impl", dest="conv_impl", choices=("auto", "xla", "im2col"),
                 help="convolutions: im2col + matmul (auto's choice on CPU) or XLA's own")
  p.add_argument("--dense-features", dest="dense_features", type=_number(int),
                 help="hidden dense width (the article: 1024)")
  p.add_argument("--log-every", dest="log_every", type=_number(int, allow_zero=True),
                 metavar="N", help="write steps.jsonl every N optimizer steps (default 0: off)")
  scale = p.add_argument_group("scaling out (data parallel; see TPU_SETUP.md)")
  scale.add_argument("--num-devices", dest="num_devices", type=_number(int), metavar="N",
                     help="train on the first N devices (default: every device of every process)")
  scale.add_argument("--shard-dense1", dest="shard_dense1", choices=("in", "out"),
                     help="split the Dense(1024) kernel and its optimizer state over the "
                          "devices along this axis (FSDP-style; default: replicate)")
  scale.add_argument("--distributed", action="store_true", default=False,
                     help="join a multi-process job (jax.distributed.initialize); on Cloud TPU "
                          "pod slices JAX finds the other hosts itself")
  scale.add_argument("--coordinator-address", dest="coordinator_address", metavar="HOST:PORT",
                     default=None, help="process 0's address (or $JAX_COORDINATOR_ADDRESS)")
  scale.add_argument("--num-processes", dest="num_processes", type=_number(int), default=None,
                     help="number of processes (or $JAX_NUM_PROCESSES)")
  scale.add_argument("--process-id", dest="process_id", type=_number(int, allow_zero=True),
                     default=None, help="this process's index, 0 to N-1 (or $JAX_PROCESS_ID)")
  return p


_DISTRIBUTED_FLAGS = ("coordinator_address", "num_processes", "process_id")


def parse_distributed(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
  """The arguments of ``parallel.initialize_distributed``, or None without --distributed."""
  args = vars(build_parser().parse_args(argv))
  return {k: args[k] for k in _DISTRIBUTED_FLAGS} if args["distributed"] else None


def parse_config(argv: Sequence[str] | None = None) -> tuple[Config, str, bool]:
  """Parses flags into ``(config, workdir, resume)``; exits with code 2 on bad flags."""
  parser = build_parser()
  args = vars(parser.parse_args(argv))
  preset, workdir, resume = args.pop("preset"), args.pop("workdir"), args.pop("resume")
  distributed = {k: args.pop(k) for k in ("distributed", *_DISTRIBUTED_FLAGS)}
  given = [k for k in _DISTRIBUTED_FLAGS if distributed[k] is not None]
  if given and not distributed["distributed"]:
    parser.error(f"--{given[0].replace('_', '-')} needs --distributed")
  try:
    config = get_config(preset, **args)
  except (TypeError, ValueError) as e:
    parser.error(str(e))
  return config, workdir, resume


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command; returns the exit code."""
  config, workdir, resume = parse_config(argv)
  distributed = parse_distributed(argv)
  try:
    if distributed is not None:
      initialize_distributed(**distributed)  # Before anything else touches JAX.
    train_and_evaluate(config, workdir, resume=resume)
  except (DataUnavailableError, CheckpointError, ParallelConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"\ninterrupted; continue with --resume (workdir {workdir})", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())

