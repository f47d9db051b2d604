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
from experiments.cifar10.train import train_and_evaluate

__all__ = ["build_parser", "main", "parse_config"]


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
  p.add_argument("--dense-features", dest="dense_features", type=_number(int),
                 help="hidden dense width (the article: 1024)")
  return p


def parse_config(argv: Sequence[str] | None = None) -> tuple[Config, str, bool]:
  """Parses flags into ``(config, workdir, resume)``; exits with code 2 on bad flags."""
  parser = build_parser()
  args = vars(parser.parse_args(argv))
  preset, workdir, resume = args.pop("preset"), args.pop("workdir"), args.pop("resume")
  try:
    config = get_config(preset, **args)
  except (TypeError, ValueError) as e:
    parser.error(str(e))
  return config, workdir, resume


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command; returns the exit code."""
  config, workdir, resume = parse_config(argv)
  try:
    train_and_evaluate(config, workdir, resume=resume)
  except (DataUnavailableError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"\ninterrupted; continue with --resume (workdir {workdir})", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())

