"""Training configurations: one frozen dataclass and named presets.

``article`` is the article's recipe; ``smoke`` is the same network trained
briefly on a subset, small enough for CI on a 2-core CPU. Command-line flags
override single fields (``dataclasses.replace``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

__all__ = ["Config", "PRESETS", "get_config", "identity_fields"]


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a CIFAR-10 training run.

  Attributes:
    epochs: passes over the training split.
    batch_size: training batch; the last, partial batch of an epoch is used
      (padded to this shape and masked), as Keras does.
    learning_rate: the optimizer's initial learning rate.
    lr_decay: Keras's legacy ``decay``: ``lr_t = learning_rate / (1 + lr_decay * t)``
      where ``t`` counts optimizer steps.
    optimizer: ``"adam"`` (the article) or ``"sgd"`` (SGD with ``momentum``).
    momentum: SGD's momentum (Keras's and Optax's heavy-ball form); only used
      with ``optimizer="sgd"``; 0 is plain SGD.
    adam_eps: Adam's epsilon (Keras's default is 1e-7, Optax's 1e-8).
    max_norm: the constraint's ``c``; ``None`` trains without a constraint.
    constrain: ``"dense1"`` (the article: the Dense(1024) kernel only) or
      ``"all"`` (every kernel, convolutions included).
    dtype: compute dtype, ``"float32"`` or ``"bfloat16"``; parameters and the
      optimizer state stay float32.
    seed: seeds initialisation and the per-epoch shuffles.
    split_seed: seeds the train/validation split (fixed across runs on purpose).
    val_size: examples held out of tfds's ``train`` split for validation.
    train_subset: train on only the first N examples of the training split.
    eval_subset: evaluate on only the first N validation and test examples.
    eval_batch_size: batch size of evaluation (does not change any result).
    conv_features: convolution channels (the article: 128).
    dense_features: hidden dense width (the article: 1024).
    conv_impl: how convolutions are computed: ``"auto"`` (im2col on CPU, where
      it is about 2x faster; XLA's native convolution elsewhere), ``"xla"``
      or ``"im2col"``. The same function to float rounding.
    dataset: tfds name of the data set.
    data_dir: tfds data directory; ``None`` means tfds's default, which honours
      ``TFDS_DATA_DIR``.
    download: let tfds download and build the data set when it is missing
      (the build needs TensorFlow).
    keep_checkpoints: how many of the per-epoch checkpoints to keep.
    log_every: also write ``steps.jsonl``, one row every ``log_every`` optimizer
      steps (and at step 1): the batch's loss and accuracy, the learning rate,
      the constraint's telemetry and per-layer neuron norms. 0: no step log.
    num_devices: train data-parallel on the first N devices; ``None``: all of
      them, of every process in a multi-host run (see :mod:`.parallel`).
      ``batch_size`` must be a multiple of the device count.
    shard_dense1: ``None`` replicates every parameter on every device; ``"in"``
      or ``"out"`` splits the Dense(1024) kernel and its optimizer state over
      the devices along that axis (FSDP-style), to save device memory.
  """

  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 1e-4
  lr_decay: float = 1e-6
  optimizer: Literal["adam", "sgd"] = "adam"
  momentum: float = 0.9
  adam_eps: float = 1e-7
  max_norm: float | None = 3.0
  constrain: Literal["dense1", "all"] = "dense1"
  dtype: Literal["float32", "bfloat16"] = "float32"
  seed: int = 0
  split_seed: int = 0
  val_size: int = 5000
  train_subset: int | None = None
  eval_subset: int | None = None
  eval_batch_size: int = 500
  conv_features: int = 128
  dense_features: int = 1024
  conv_impl: Literal["auto", "xla", "im2col"] = "auto"
  dataset: str = "cifar10"
  data_dir: str | None = None
  download: bool = True
  keep_checkpoints: int = 2
  log_every: int = 0
  num_devices: int | None = None
  shard_dense1: Literal["in", "out"] | None = None

  def __post_init__(self):
    positive = ("epochs", "batch_size", "eval_batch_size", "conv_features",
                "dense_features", "val_size", "keep_checkpoints")
    for name in positive:
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    for name in ("train_subset", "eval_subset"):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}.")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
    if not self.lr_decay >= 0:
      raise ValueError(f"lr_decay must be >= 0, got {self.lr_decay}.")
    if self.max_norm is not None and not 0 < self.max_norm < math.inf:
      raise ValueError(f"max_norm must be finite and > 0, or None (no constraint), "
                       f"got {self.max_norm}.")
    if self.optimizer not in ("adam", "sgd"):
      raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}.")
    if not 0 <= self.momentum < 1:
      raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
    if self.log_every < 0:
      raise ValueError(f"log_every must be >= 0 (0: no step log), got {self.log_every}.")
    if self.constrain not in ("dense1", "all"):
      raise ValueError(f"constrain must be 'dense1' or 'all', got {self.constrain!r}.")
    if self.conv_impl not in ("auto", "xla", "im2col"):
      raise ValueError(f"conv_impl must be 'auto', 'xla' or 'im2col', got {self.conv_impl!r}.")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}.")
    if self.num_devices is not None and self.num_devices < 1:
      raise ValueError(f"num_devices must be >= 1 or None (all), got {self.num_devices}.")
    if self.shard_dense1 not in (None, "in", "out"):
      raise ValueError(f"shard_dense1 must be None, 'in' or 'out', got {self.shard_dense1!r}.")

  def to_json(self) -> dict[str, Any]:
    """The config as a JSON-serialisable dict."""
    return dataclasses.asdict(self)


# Fields that may change between a run and its resumption without changing
# the result: where the data lives, and how long to train (the learning-rate
# schedule depends on the step count only, so training on is the same run).
# The device layout may change too: Orbax restores a checkpoint onto any mesh
# (results then differ by floating-point summation order only).
_NON_IDENTITY_FIELDS = frozenset({"data_dir", "download", "epochs", "keep_checkpoints",
                                  "num_devices", "shard_dense1"})


def identity_fields(config: Config | dict[str, Any]) -> dict[str, Any]:
  """The fields that must match for a checkpoint to belong to this run."""
  values = config.to_json() if isinstance(config, Config) else dict(config)
  return {k: v for k, v in values.items() if k not in _NON_IDENTITY_FIELDS}


PRESETS: dict[str, Config] = {
    # The article: Adam(1e-4, decay 1e-6), batch 128, 10 epochs, max_norm(3)
    # on the Dense(1024) kernel, the full network.
    "article": Config(),
    # The same network and recipe, 1 epoch on 2,560 training images (20 steps)
    # and 1,000 validation/test images, with a 3x larger learning rate so
    # that 20 steps visibly learn. About 2 minutes on a 2-core CPU.
    "smoke": Config(epochs=1, train_subset=2560, eval_subset=1000, learning_rate=3e-4),
}


def get_config(preset: str = "article", **overrides: Any) -> Config:
  """A preset with some fields replaced, e.g. ``get_config("smoke", seed=1)``."""
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(PRESETS)}.")
  return dataclasses.replace(PRESETS[preset], **overrides)
