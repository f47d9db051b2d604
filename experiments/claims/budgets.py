"""Named compute budgets: how much training each experiment's runs get.

A budget is stated next to every number the experiments report, and one
results table never mixes two budgets. Each budget has two training
schedules, as Config overrides on top of the ``article`` preset: ``regular``
for the regularisation experiments (E1, E2), and ``short``, with a step log,
for the learning-rate experiment (E3), where divergence shows within a few
steps. Every number of a schedule is written once, in its overrides; the
descriptions in the reports are generated from them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from experiments.cifar10.cifar10_archive import ARRAYS
from experiments.cifar10.configs import Config, get_config
from experiments.cifar10.input_pipeline import num_batches

__all__ = ["BUDGETS", "CIFAR10_TEST", "CIFAR10_TRAIN", "Budget", "Schedule", "describe_schedule",
           "get_budget"]

Schedule = Literal["regular", "short"]

CIFAR10_TRAIN = ARRAYS["train_labels"].shape[0]  # CIFAR-10's training split (50,000).
CIFAR10_TEST = ARRAYS["test_labels"].shape[0]  # Its test split (10,000).


@dataclasses.dataclass(frozen=True)
class Budget:
  """How much compute each run of an experiment gets.

  Attributes:
    name: the budget's name (also a directory level under the runs directory).
    regular: Config overrides (on top of the ``article`` preset) for E1 and E2.
    short: Config overrides for E3 (must set ``log_every``).
    rationale: why the budget exists and what it gives up, for the reports.
  """

  name: str
  regular: dict[str, Any]
  short: dict[str, Any]
  rationale: str = ""

  def __post_init__(self):
    if not self.name or "/" in self.name:
      raise ValueError(f"A budget's name must be a non-empty directory name, got {self.name!r}.")
    if not self.short.get("log_every"):
      raise ValueError(f"Budget {self.name!r}: the short schedule (E3) needs log_every >= 1, "
                       f"since E3 reports curves over steps.")
    for schedule in ("regular", "short"):  # A typo or a bad value fails here, not mid-sweep.
      try:
        self.config(schedule)
      except (TypeError, ValueError) as e:
        raise ValueError(f"Budget {self.name!r}: bad {schedule} overrides: {e}") from e

  def overrides(self, schedule: Schedule) -> dict[str, Any]:
    """The Config overrides of ``schedule``."""
    return self.regular if schedule == "regular" else self.short

  def config(self, schedule: Schedule, **settings: Any) -> Config:
    """The ``article`` preset with this schedule's overrides, then ``settings``."""
    return get_config("article", **{**self.overrides(schedule), **settings})

  def describe(self, schedule: Schedule, *, recipe: bool | None = None) -> str:
    """What ``schedule`` trains, in words (see :func:`describe_schedule`); ``recipe``
    (default: for the regular schedule) includes the optimizer and its settings."""
    return describe_schedule(self.config(schedule),
                             recipe=schedule == "regular" if recipe is None else recipe)


def _ordinal(n: int) -> str:
  suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
  return f"{n}{suffix}"


def describe_schedule(config: Config, *, recipe: bool) -> str:
  """``config`` as a reader needs it: network, recipe, data, steps, step log, evaluation.

  Args:
    config: a schedule's config (the ``article`` preset with its overrides).
    recipe: describe the optimizer too (False where the experiment sets it per run).
  """
  article = get_config("article")
  widths = [f"{name} width {getattr(config, field)}"
            for name, field in (("conv", "conv_features"), ("dense", "dense_features"))
            if getattr(config, field) != getattr(article, field)]
  text = "the article's network" + (" at " + " and ".join(widths) if widths else "")
  if recipe:
    changed = [f"{label} {getattr(config, field):g} (the article's: {getattr(article, field):g})"
               for label, field in (("learning rate", "learning_rate"), ("decay", "lr_decay"),
                                    ("batch", "batch_size"), ("momentum", "momentum"))
               if getattr(config, field) != getattr(article, field)
               and (field != "momentum" or config.optimizer == "sgd")]
    if config.optimizer != article.optimizer:
      changed.insert(0, f"optimizer {config.optimizer}")
    text += ", " + ", ".join(changed) if changed else " and recipe"
  num_train = config.train_subset or CIFAR10_TRAIN - config.val_size
  steps = config.epochs * num_batches(num_train, config.batch_size)
  epochs = f"{config.epochs} epoch" + ("s" if config.epochs > 1 else "")
  where = f"on the first {num_train:,}" if config.train_subset else f"over {num_train:,}"
  text += f", {epochs} {where} training images ({steps:,} steps of {config.batch_size})"
  if config.log_every:
    text += (", every step logged" if config.log_every == 1 else
             f", every {_ordinal(config.log_every)} step logged")
  if config.eval_subset and config.eval_subset < min(config.val_size, CIFAR10_TEST):
    return text + f"; validation and test on the first {config.eval_subset:,} images each"
  val, test = (min(n, config.eval_subset or n) for n in (config.val_size, CIFAR10_TEST))
  return text + f"; validation on {val:,} and test on {test:,} images"


# The cpu-proxy network and data, shared by its two schedules.
_PROXY = dict(conv_features=32, dense_features=256, train_subset=4000, eval_subset=2000)

BUDGETS: dict[str, Budget] = {b.name: b for b in (
    # The article's network and recipe, but 32 steps instead of 3,520: sized
    # for tests and for checking the plumbing on a 2-core CPU, where one
    # 128-image step of the article's network took 2-13 s (2026-11-26).
    Budget(
        name="cpu",
        regular=dict(epochs=1, train_subset=4096, eval_subset=1000),
        short=dict(epochs=1, train_subset=2560, eval_subset=500, log_every=1),
        rationale=("Sized for checking the machinery on a 2-core CPU: the weights move too "
                   "little in 20-32 steps for the constraint to act or the network to "
                   "overfit, so this budget cannot test the claims.")),
    # The article's architecture at smaller widths on a subset, for a 2-core
    # CPU (probes, 2026-11-27): see the rationale. Its network and data are
    # _PROXY; each schedule is one line.
    Budget(
        name="cpu-proxy",
        regular=dict(_PROXY, learning_rate=1e-3, epochs=16),
        short=dict(_PROXY, epochs=4, log_every=4),
        rationale=(
            "A proxy of the article sized for a 2-core CPU, chosen by probes without the "
            "constraint. Glorot initialisation keeps a dense neuron's initial norm near 1.41 "
            "at any width, so c keeps its meaning at the smaller widths; the 10x learning "
            "rate and the many epochs on a small subset make the weights reach c = 3 and the "
            "network overfit. In the probe (Adam at 1e-3, 16 epochs), the dense layer's "
            "largest neuron norm passed 3 at epoch 5 (from 1.4; 5.4 at the end), and train "
            "accuracy reached 1.0 against validation 0.49: the overfitting regime that the "
            "regularisation claim is about. It gives up the article's widths, most of its "
            "training data, its learning rate and full-size evaluation, so its numbers are "
            "not the article's (those are the `full` budget's).")),
    # The cpu-proxy network on the whole training split: does what cpu-proxy
    # found hold outside its small-data regime? 4 epochs are 1,408 steps, 2.75x
    # cpu-proxy's 512, by which cpu-proxy's dense layer had long passed c = 3.
    Budget(
        name="cpu-proxy-45k",
        regular=dict(conv_features=32, dense_features=256, learning_rate=1e-3, epochs=4),
        short=dict(conv_features=32, dense_features=256, epochs=1, log_every=10),
        rationale=(
            "The cpu-proxy network and recipe (Adam at 1e-3) on all 45,000 training images "
            "for 4 epochs (1,408 steps, 2.75x cpu-proxy's), evaluated on the full validation "
            "and test sets: the regime the article trains in (no heavy overfitting of a "
            "small subset), at the proxy's widths. About 3x the compute of a cpu-proxy "
            "run.")),
    # The article's budget, for a GPU/TPU: 10 epochs over 45,000 images
    # (3,520 steps), full validation and test sets.
    Budget(name="full", regular=dict(), short=dict(epochs=1, log_every=10)),
)}


def get_budget(name: str) -> Budget:
  """The budget called ``name``; a ValueError names the choices otherwise."""
  if name not in BUDGETS:
    raise ValueError(f"Unknown budget {name!r}; choose from {sorted(BUDGETS)}.")
  return BUDGETS[name]
