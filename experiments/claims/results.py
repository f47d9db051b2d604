"""Reading runs back from disk: config, per-epoch metrics, step log, summary, host.

Every accessor is None-safe: a diverged run writes ``null`` for non-finite
numbers, a step row of a diverged step that was not a logged step has
``"neuron_norms": null``, and an incomplete run has no summary.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Sequence
from typing import Any

from experiments.cifar10 import records
from experiments.cifar10.configs import Config
from experiments.cifar10.models import DENSE1_KERNEL
from experiments.claims.host import read_host
from experiments.claims.runs import RunSpec

__all__ = ["CHANCE_LOSS", "CONVS", "DENSE", "LAYERS", "RunResult", "dense_name", "largest_norm",
           "load_result", "row_norm"]

# The kernels of the article's network, as the pipeline names them in its norm stats.
LAYERS = ("conv1/kernel", "conv2/kernel", "conv3/kernel", "dense1/kernel", "dense2/kernel")
DENSE = DENSE1_KERNEL  # The hidden dense layer, where the article puts max_norm(3).
CONVS = tuple(layer for layer in LAYERS if layer.startswith("conv"))
CHANCE_LOSS = math.log(10)  # The loss of a uniform guess over CIFAR-10's 10 classes.


def dense_name(of: Config | Sequence[Config | RunResult]) -> str:
  """``Dense(1024)`` (the hidden dense layer, named by its width), or ``Dense(256/1024)``:
  the dense layer of a config, or of configs or runs."""
  items = [of] if isinstance(of, Config) else of
  configs = [c.spec.config if isinstance(c, RunResult) else c for c in items]
  widths = sorted({c.dense_features for c in configs})
  return f"Dense({'/'.join(map(str, widths))})" if widths else "the dense layer"


def row_norm(row: dict[str, Any], layer: str = DENSE, stat: str = "max") -> float | None:
  """``stat`` (``max`` or ``mean``) of ``layer``'s neuron norms in a metrics or step row."""
  return ((row.get("neuron_norms") or {}).get(layer) or {}).get(stat)


def largest_norm(row: dict[str, Any], layers: Sequence[str]) -> float | None:
  """The largest neuron norm among ``layers`` in a metrics or step row (None if none)."""
  values = [n for n in (row_norm(row, layer) for layer in layers) if n is not None]
  return max(values) if values else None


@dataclasses.dataclass(frozen=True)
class RunResult:
  """What one run left on disk (``summary`` is None until it completes).

  Attributes:
    spec: the run.
    workdir: its directory.
    summary: ``summary.json`` (None while incomplete).
    metrics: rows of ``metrics.jsonl`` (one per epoch).
    steps: rows of ``steps.jsonl`` (one per logged step; [] without ``log_every``).
    host: ``host.json`` (the machine that trained it; None if not recorded).
  """
  spec: RunSpec
  workdir: pathlib.Path
  summary: dict[str, Any] | None
  metrics: list[dict[str, Any]]
  steps: list[dict[str, Any]]
  host: dict[str, Any] | None = None

  @property
  def complete(self) -> bool:
    return self.summary is not None

  @property
  def diverged(self) -> bool:
    """The pipeline stopped the run at a NaN/inf loss (summaries from before
    divergence was recorded count as not diverged)."""
    return bool(self.summary and self.summary.get("diverged"))

  @property
  def constrained(self) -> bool:
    return self.spec.config.max_norm is not None

  @property
  def last_epoch(self) -> dict[str, Any]:
    """The last row of ``metrics.jsonl`` ({} if none)."""
    return self.metrics[-1] if self.metrics else {}

  @property
  def bound_epochs(self) -> list[int]:
    """The epochs in which the constraint bound: a neuron was at norm c after some step
    (``fraction_at_bound`` > 0)."""
    return [row["epoch"] for row in self.metrics if (row.get("fraction_at_bound") or 0) > 0]

  @property
  def bound(self) -> bool:
    """Did the constraint bind, in any epoch? (If not, it changed no weight.)"""
    return bool(self.bound_epochs)

  @property
  def losses(self) -> list[float | None]:
    """The batch loss of each logged step (None where it was not finite)."""
    return [row.get("loss") for row in self.steps]

  @property
  def last_logged_norms(self) -> dict[str, Any]:
    """The last step row that measured neuron norms ({} if none: a diverged step that was
    not a logged step measured none)."""
    return next((row for row in reversed(self.steps) if row.get("neuron_norms")), {})

  def get(self, key: str) -> Any:
    """``summary[key]`` (None when incomplete or missing)."""
    return (self.summary or {}).get(key)

  def final_norm(self, layer: str = DENSE, stat: str = "max") -> float | None:
    """``stat`` of ``layer``'s neuron norms after the last epoch."""
    return row_norm(self.last_epoch, layer, stat)

  @property
  def train_accuracy(self) -> float | None:
    """The running mean of the batch accuracies over the last epoch, while training."""
    return self.last_epoch.get("train_accuracy")

  @property
  def train_val_gap(self) -> float | None:
    """:attr:`train_accuracy` minus the final validation accuracy."""
    train, val = self.train_accuracy, self.get("val_accuracy")
    return None if train is None or val is None else train - val

  @property
  def steps_trained(self) -> int | None:
    """Optimizer steps run; for a diverged run, the step of the first non-finite loss
    (the loop stops within a read interval of it, so ``summary["steps"]`` may count a
    few more steps, taken on non-finite weights)."""
    if self.diverged and self.get("diverged_at_step") is not None:
      return self.get("diverged_at_step")
    return self.get("steps")

  @property
  def planned_steps(self) -> int | None:
    """Epochs x steps per epoch (each metrics row records ``step = epoch * steps_per_epoch``);
    None before the first epoch ends."""
    if not self.metrics:
      return None
    return self.spec.config.epochs * (self.metrics[0]["step"] // self.metrics[0]["epoch"])


def load_result(spec: RunSpec, workdir: pathlib.Path) -> RunResult:
  """Reads the run in ``workdir``; missing files read as empty.

  Raises:
    RecordsError: a file of the run is damaged ("FILE, line N: what is wrong").
  """
  summary = records.read_summary(workdir)
  if summary is not None:
    _check_summary(workdir / records.SUMMARY, summary)
  return RunResult(spec, workdir, summary, records.read_metrics(workdir),
                   records.read_steps(workdir), read_host(workdir))


# The summary fields the experiments read: a number (or null: a diverged run has no
# accuracy); test accuracy must be there.
_NUMBERS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "total_seconds",
            "diverged_at_step")


def _check_summary(path: pathlib.Path, summary: dict[str, Any]) -> None:
  """Raises RecordsError ("FILE: what is wrong") for a summary the tables would misread."""
  if "test_accuracy" not in summary:
    raise records.RecordsError(f"{path}: 'test_accuracy' is missing")
  for key in _NUMBERS:
    value = summary.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
      raise records.RecordsError(f"{path}: {key!r} is {value!r}, not a number")
  if not isinstance(summary.get("diverged", False), bool):
    raise records.RecordsError(f"{path}: 'diverged' is {summary['diverged']!r}, not true or false")
