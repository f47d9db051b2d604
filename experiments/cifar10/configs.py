"""Training configurations: one frozen dataclass and named presets.

``article`` is the article's recipe; ``smoke`` is the same network trained
briefly on a subset, small enough for CI on a 2-core CPU. Each field of
:class:`Config` carries its own help text and validity check (its
``metadata``); the command line (:mod:`.cli`) is generated from them, so a
field, its flag, its choices and its check are written once, here.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from experiments.cifar10.array_cache import CACHE_DIR_ENV
from experiments.cifar10.cifar10_archive import DEFAULT_URL, TFDS_VERSION, URL_ENV

__all__ = [
    "Config", "ConfigError", "ConvImpl", "Constrain", "Dtype", "Optimizer", "PRESETS",
    "ShardAxis", "choices", "get_config", "identity_fields",
]

Optimizer = Literal["adam", "sgd"]
Constrain = Literal["dense1", "all"]
Dtype = Literal["float32", "bfloat16"]
ConvImpl = Literal["auto", "xla", "im2col"]
ShardAxis = Literal["in", "out"]


class ConfigError(ValueError):
  """A field of :class:`Config` has a bad value; ``field`` names it."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field} {message}")
    self.field = field
    self.message = message


Check = Callable[[Any], "str | None"]  # The problem with a value, or None when it is fine.


def _at_least(low: int) -> Check:
  return lambda v: None if v >= low else f"must be >= {low}, got {v}"


def _seed(v: int) -> str | None:
  return None if 0 <= v < 2**63 else f"must be in [0, 2**63), got {v}"


TRAIN_EXAMPLES = 50_000  # CIFAR-10's training split, which validation is held out of.


def _val_size(v: int) -> str | None:
  if 1 <= v < TRAIN_EXAMPLES:
    return None
  return f"must be in [1, {TRAIN_EXAMPLES}) (CIFAR-10's training split is {TRAIN_EXAMPLES:,} " \
         f"examples), got {v}"


# The train step computes in float32: a float setting must be a normal float32 (or 0).
_FLOAT32_MAX, _FLOAT32_TINY = 3.4028234663852886e38, 1.1754943508222875e-38


def _float32_problem(v: float) -> str | None:
  if abs(v) > _FLOAT32_MAX:
    return f"overflows float32, which the train step computes in (largest {_FLOAT32_MAX:.4g}), " \
           f"got {v}"
  if 0 < abs(v) < _FLOAT32_TINY:
    return f"underflows float32, which the train step computes in (smallest normal " \
           f"{_FLOAT32_TINY:.4g}), got {v}"
  return None


def _positive_finite(v: float) -> str | None:
  return None if math.isfinite(v) and v > 0 else f"must be finite and > 0, got {v}"


def _nonnegative_finite(v: float) -> str | None:
  return None if math.isfinite(v) and v >= 0 else f"must be finite and >= 0, got {v}"


def _unit_interval(v: float) -> str | None:
  return None if 0 <= v < 1 else f"must be in [0, 1), got {v}"


def _max_norm(v: float) -> str | None:
  if math.isfinite(v) and v > 0:
    return None
  return f"must be finite and > 0, got {v} (to train without the constraint, use " \
         f"--no-max-norm, i.e. None)"


def _field(default: Any, help: str, check: Check | None = None, **metadata: Any) -> Any:
  """A Config field with its help text and check (the check is skipped for None)."""
  return dataclasses.field(default=default, metadata={"help": help, "check": check, **metadata})


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a CIFAR-10 training run.

  Each field's help text is in its ``metadata["help"]`` (and ``--help``).
  Invalid values raise :class:`ConfigError` naming the field.
  """

  epochs: int = _field(10, "passes over the training split", _at_least(1))
  batch_size: int = _field(
      128, "training batch; the last, partial batch of an epoch is used (padded to this shape "
      "and masked), as Keras does", _at_least(1))
  learning_rate: float = _field(1e-4, "the optimizer's initial learning rate", _positive_finite)
  lr_decay: float = _field(
      1e-6, "Keras's legacy decay: lr_t = learning_rate / (1 + lr_decay * t), t counting "
      "optimizer steps", _nonnegative_finite)
  optimizer: Optimizer = _field("adam", "adam (the article) or sgd (SGD with --momentum)")
  momentum: float = _field(
      0.9, "SGD's momentum (heavy ball); only used with --optimizer sgd; 0 is plain SGD",
      _unit_interval)
  adam_eps: float = _field(1e-7, "Adam's epsilon (Keras's default 1e-7; Optax's is 1e-8)",
                           _positive_finite)
  max_norm: float | None = _field(
      3.0, "the max-norm bound c; None (--no-max-norm) trains without the constraint",
      _max_norm, metavar="C")
  dropout: float = _field(
      0.0, "dropout rate on the hidden dense layer's outputs (after its relu) while training; "
      "0: none (the article)", _unit_interval, metavar="P")
  conv_dropout: float = _field(
      0.0, "dropout rate on the last convolution's outputs (after its relu, before the "
      "hidden dense layer) while training; 0: none (the article)", _unit_interval,
      metavar="P")
  constrain: Constrain = _field(
      "dense1", "constrain the Dense(1024) kernel only (dense1, the article) or every kernel "
      "(all)")
  dtype: Dtype = _field(
      "float32", "compute dtype; parameters and the optimizer state stay float32")
  seed: int = _field(0, "seeds initialisation and the per-epoch shuffles", _seed)
  split_seed: int = _field(
      0, "seeds the train/validation split (fixed across runs on purpose)", _seed)
  val_size: int = _field(5000, "examples held out of the training split for validation",
                         _val_size)
  train_subset: int | None = _field(
      None, "train on the first N examples of the training split only", _at_least(1),
      metavar="N")
  eval_subset: int | None = _field(
      None, "evaluate on the first N validation and test examples only", _at_least(1),
      metavar="N")
  eval_batch_size: int = _field(500, "evaluation batch (changes no result)", _at_least(1))
  conv_features: int = _field(128, "channels of each convolution (the article: 128)",
                              _at_least(1))
  dense_features: int = _field(1024, "width of the hidden dense layer (the article: 1024)",
                               _at_least(1))
  conv_impl: ConvImpl = _field(
      "auto", "how convolutions are computed: im2col + matmul (auto's choice on CPU, 1.6x "
      "faster there) or XLA's own (auto's choice elsewhere); the same function to float "
      "rounding")
  dataset: str = _field(
      "cifar10", "tfds name of the data set; cifar10 needs no --data-dir (it is built from its "
      "canonical archive), others are read from --data-dir or tfds's default directory")
  data_dir: str | None = _field(
      None, f"a directory holding a tfds-prepared copy (DIR/cifar10/{TFDS_VERSION}/, "
      f"array_record), read "
      f"with tfds and never written to (default: CIFAR-10 fetched once from its canonical "
      f"archive and cached in ${CACHE_DIR_ENV}, else ~/.cache/maxnorm_jax)", metavar="DIR")
  data_url: str | None = _field(
      None, f"where to fetch cifar-10-binary.tar.gz when there is no --data-dir and no cached "
      f"copy: a mirror of the same file (its checksum is checked); file:///path works "
      f"(default: ${URL_ENV}, else {DEFAULT_URL})", metavar="URL")
  download: bool = _field(
      True, "fetch and build CIFAR-10 from its archive when it is not cached yet "
      "(--no-download: fail instead)")
  keep_checkpoints: int = _field(2, "how many per-epoch checkpoints to keep", _at_least(1))
  log_every: int = _field(
      0, "also write steps.jsonl every N optimizer steps (and at step 1): the batch's loss "
      "and accuracy, the learning rate, the constraint's telemetry and per-layer neuron "
      "norms; 0: no step log", _at_least(0), metavar="N")
  num_devices: int | None = _field(
      None, "train data-parallel on the first N devices (default: every device of every "
      "process); --batch-size must be a multiple of N", _at_least(1), metavar="N",
      group="scaling out")
  shard_dense1: ShardAxis | None = _field(
      None, "split the Dense(1024) kernel and its optimizer state over the devices along "
      "this axis (FSDP-style; default: replicate)", group="scaling out")

  def __post_init__(self):
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      allowed = choices(hints[f.name])
      if allowed is not None and value not in allowed:
        raise ConfigError(f.name, f"must be one of {allowed}, got {value!r}")
      check = f.metadata["check"]
      if value is not None and check is not None:
        problem = check(value)
        if not problem and isinstance(value, float):
          problem = _float32_problem(value)
        if problem:
          raise ConfigError(f.name, problem)

  def to_json(self) -> dict[str, Any]:
    """The config as a JSON-serialisable dict."""
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, values: dict[str, Any]) -> Config:
    """The config of a ``to_json`` dict; fields it lacks (a run written before they
    existed) take their defaults.

    Raises:
      ConfigError: a value is invalid, or a field is unknown.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(unknown[0], "is not a field of this version's Config")
    return cls(**values)


def choices(hint: Any) -> tuple[Any, ...] | None:
  """The allowed values of a ``Literal`` type (``None`` included for ``Literal | None``),
  or None for any other type."""
  if typing.get_origin(hint) is Literal:
    return typing.get_args(hint)
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    args = typing.get_args(hint)
    literals = [a for a in args if typing.get_origin(a) is Literal]
    if literals and all(a is type(None) or typing.get_origin(a) is Literal for a in args):
      return tuple(v for a in literals for v in typing.get_args(a)) + (None,)
  return None


# Fields that may change between a run and its resumption without changing
# the result: where the data lives, and how long to train (the learning-rate
# schedule depends on the step count only, so training on is the same run).
# The device layout may change too: Orbax restores a checkpoint onto any mesh
# (results then differ by floating-point summation order only).
_NON_IDENTITY_FIELDS = frozenset({"data_dir", "data_url", "download", "epochs",
                                  "keep_checkpoints", "num_devices", "shard_dense1"})


def identity_fields(config: Config | dict[str, Any]) -> dict[str, Any]:
  """The fields that must match for a checkpoint to belong to this run.

  A dict (a saved ``config.json``) that lacks a field, because it was written
  before the field existed, counts as holding that field's default.
  """
  defaults = Config().to_json()
  values = config.to_json() if isinstance(config, Config) else {**defaults, **config}
  return {k: v for k, v in values.items() if k not in _NON_IDENTITY_FIELDS}


PRESETS: dict[str, Config] = {
    # The article: Adam(1e-4, decay 1e-6), batch 128, 10 epochs, max_norm(3)
    # on the Dense(1024) kernel, the full network.
    "article": Config(),
    # The same network and recipe, 1 epoch on 2,560 training images (20 steps)
    # and 1,000 validation/test images, with a 3x larger learning rate so
    # that 20 steps visibly learn. About 1 minute on a 2-core CPU.
    "smoke": Config(epochs=1, train_subset=2560, eval_subset=1000, learning_rate=3e-4),
}


def get_config(preset: str = "article", **overrides: Any) -> Config:
  """A preset with some fields replaced, e.g. ``get_config("smoke", seed=1)``.

  Raises:
    ValueError: an unknown preset.
    ConfigError: a bad value (it names the field).
    TypeError: an unknown field.
  """
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(PRESETS)}.")
  return dataclasses.replace(PRESETS[preset], **overrides)
