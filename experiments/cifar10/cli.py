"""The command line of ``python -m experiments.cifar10``, generated from :class:`Config`.

Every field of :class:`~experiments.cifar10.configs.Config` is a flag
(``batch_size`` is ``--batch-size``) with the field's help text; ``Literal``
fields take their values as choices, booleans get ``--x``/``--no-x``, and a
field whose default is not None but may be None gets ``--no-x`` (``--no-max-norm``).
Unset flags keep the preset's value; the field's own check then validates the
result. :func:`equivalent_command` is the inverse: the command that makes a
given config.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import shlex
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from experiments.cifar10.configs import PRESETS, Config, ConfigError, choices, get_config

__all__ = ["Invocation", "build_parser", "equivalent_command", "flag_of", "parse", "shell_join"]

_DISTRIBUTED = ("coordinator_address", "num_processes", "process_id", "timeout_s")


class Invocation(NamedTuple):
  """What one command line asks for.

  Attributes:
    config: the training config (the preset with the flags applied).
    workdir: the output directory.
    resume: continue from the last checkpoint in ``workdir``.
    overwrite: replace the run that ``workdir`` holds.
    distributed: the arguments of ``distributed.initialize_distributed``, or
      None when ``--distributed`` is not given.
  """
  config: Config
  workdir: str
  resume: bool
  distributed: dict[str, Any] | None
  overwrite: bool = False


def flag_of(field: str) -> str:
  """``batch_size`` -> ``--batch-size``."""
  return "--" + field.replace("_", "-")


def _base_type(hint: Any) -> Any:
  """``int | None`` -> ``int``; other hints unchanged."""
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else hint
  return hint


def _optional(hint: Any) -> bool:
  return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
      typing.get_args(hint))


_KIND_NAMES = {int: "an integer", float: "a number"}


def _parse_number(kind: type) -> Callable[[str], Any]:
  """An argparse type that converts text to ``kind``; the field's check validates."""
  def parse(text: str) -> Any:
    try:
      return kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected {_KIND_NAMES[kind]}, got {text!r}") from None
  parse.__name__ = kind.__name__
  return parse


def build_parser() -> argparse.ArgumentParser:
  """The command's flags: the run's own, then one per Config field."""
  p = argparse.ArgumentParser(
      prog="python -m experiments.cifar10",
      description="Train the article's max-norm CNN on CIFAR-10 and evaluate it.",
      argument_default=argparse.SUPPRESS)
  p.add_argument("--preset", choices=sorted(PRESETS), default="article",
                 help="starting configuration (default: article)")
  p.add_argument("--workdir", required=True,
                 help="output directory: config.json, metrics.jsonl, summary.json, checkpoints/")
  run = p.add_mutually_exclusive_group()
  run.add_argument("--resume", action="store_true", default=False,
                   help="continue from the last checkpoint in --workdir")
  run.add_argument("--overwrite", action="store_true", default=False,
                   help="replace the run that --workdir holds (kept until this one finishes)")
  groups: dict[str, argparse._ArgumentGroup] = {}
  hints = typing.get_type_hints(Config)
  for field in dataclasses.fields(Config):
    group_name = field.metadata.get("group")
    target: Any = p if group_name is None else groups.setdefault(
        group_name, p.add_argument_group(group_name))
    _add_field(target, field, hints[field.name])
  scale = groups.setdefault("scaling out", p.add_argument_group("scaling out"))
  scale.add_argument("--distributed", action="store_true", default=False,
                     help="join a multi-process job (jax.distributed.initialize); on Cloud TPU "
                          "pod slices JAX finds the other hosts itself")
  scale.add_argument("--coordinator-address", dest="coordinator_address", metavar="HOST:PORT",
                     default=None, help="process 0's address (or $JAX_COORDINATOR_ADDRESS)")
  scale.add_argument("--num-processes", dest="num_processes", type=_parse_number(int),
                     default=None, help="number of processes (or $JAX_NUM_PROCESSES)")
  scale.add_argument("--process-id", dest="process_id", type=_parse_number(int),
                     default=None, help="this process's index, 0 to N-1 (or $JAX_PROCESS_ID)")
  scale.add_argument("--distributed-timeout", dest="timeout_s", type=_parse_number(int),
                     metavar="SECONDS", default=None,
                     help="give up with exit code 1 if the processes have not all joined "
                          "within this many seconds (default: 300)")
  return p


def _add_field(target: Any, field: dataclasses.Field, hint: Any) -> None:
  flag, help_text = flag_of(field.name), field.metadata["help"]
  allowed = choices(hint)
  base = _base_type(hint)
  if base is bool:
    target.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                        help=help_text)
    return
  kwargs: dict[str, Any] = {"dest": field.name, "help": help_text}
  if allowed is not None:
    kwargs["choices"] = [c for c in allowed if c is not None]
  elif base in (int, float):
    kwargs["type"] = _parse_number(base)
  if "metavar" in field.metadata:
    kwargs["metavar"] = field.metadata["metavar"]
  if not (_optional(hint) and field.default is not None):
    target.add_argument(flag, **kwargs)
    return
  exclusive = target.add_mutually_exclusive_group()  # --x VALUE or --no-x (None).
  exclusive.add_argument(flag, **kwargs)
  exclusive.add_argument(f"--no-{flag[2:]}", dest=field.name, action="store_const",
                         const=None, help=f"set {field.name} to None")


def parse(argv: Sequence[str] | None = None) -> Invocation:
  """Parses the command line once; exits with code 2 (and says why) on a bad flag."""
  parser = build_parser()
  args = vars(parser.parse_args(argv))
  preset, workdir, resume = args.pop("preset"), args.pop("workdir"), args.pop("resume")
  overwrite = args.pop("overwrite")
  if not workdir.strip():
    parser.error("argument --workdir: must not be empty")
  is_distributed = args.pop("distributed")
  distributed = {k: args.pop(k) for k in _DISTRIBUTED}
  given = [k for k, v in distributed.items() if v is not None]
  if given and not is_distributed:
    parser.error(f"{flag_of(given[0]) if given[0] != 'timeout_s' else '--distributed-timeout'} "
                 f"needs --distributed")
  if distributed["timeout_s"] is not None and distributed["timeout_s"] < 1:
    parser.error(f"argument --distributed-timeout: must be >= 1, got {distributed['timeout_s']}")
  try:
    config = get_config(preset, **args)
  except ConfigError as e:
    parser.error(f"argument {flag_of(e.field)}: {e.message}")
  return Invocation(config, workdir, resume, distributed if is_distributed else None,
                    overwrite)


def _value_text(value: Any) -> str:
  if isinstance(value, float):
    return repr(value)  # The shortest text that reads back as the same float.
  return str(value)


def _shell_word(word: str) -> str:
  """``word`` quoted for a POSIX shell; a path under the home directory as
  ``"$HOME/..."``, so that a command written into a report works for its reader."""
  home = str(pathlib.Path.home())
  if home != "/" and word.startswith(home + "/"):
    rest = word[len(home) + 1:]
    if rest and all(c.isalnum() or c in "/._-+=,:@%" for c in rest):
      return f'"$HOME/{rest}"'
  return shlex.quote(word)


def shell_join(words: Sequence[str]) -> str:
  """``shlex.join``, but a path under the home directory reads ``"$HOME/..."``."""
  return " ".join(map(_shell_word, words))


def equivalent_command(config: Config, workdir: str | Any, *, preset: str = "article") -> str:
  """The ``python -m experiments.cifar10`` command that trains ``config``.

  Only the fields that differ from ``preset`` appear. ``parse`` of the result
  gives ``config`` back.
  """
  base = PRESETS[preset]
  hints = typing.get_type_hints(Config)
  args = ["python", "-m", "experiments.cifar10", "--preset", preset]
  for field in dataclasses.fields(Config):
    value, default = getattr(config, field.name), getattr(base, field.name)
    if value == default or (isinstance(value, float) and isinstance(default, float)
                            and math.isnan(value) and math.isnan(default)):
      continue
    flag = flag_of(field.name)
    if _base_type(hints[field.name]) is bool:
      args.append(flag if value else f"--no-{flag[2:]}")
    elif value is None:
      if field.default is None:  # Only fields with a non-None default have --no-x.
        raise ValueError(f"{field.name}=None has no flag relative to preset {preset!r}.")
      args.append(f"--no-{flag[2:]}")
    else:
      args += [flag, _value_text(value)]
  args += ["--workdir", str(workdir)]
  return shell_join(args)
