"""What is measured: per-batch sums accumulated on the device, per-layer norms.

Sums stay on the device during an epoch and are read once at its end.
Example-weighted sums make the padded last batch count exactly its real
examples.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

import maxnorm_jax as mnj

__all__ = [
    "accumulate", "batch_sums", "finite_or_none", "neuron_norm_stats", "norm_stats",
    "norm_stats_to_json", "summarise", "telemetry", "zeros",
]

Totals = dict[str, jax.Array]
# Telemetry that `maxnorm_jax.max_norm` leaves in its state after each update.
TELEMETRY = ("fraction_at_bound", "largest_norm")


def batch_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> Totals:
  """Example-weighted loss and accuracy sums of one batch."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return {
      "loss": jnp.sum(weights * losses),
      "correct": jnp.sum(weights * correct),
      "count": jnp.sum(weights),
  }


def telemetry(opt_state: optax.OptState) -> Totals:
  """The max-norm telemetry of the latest update ({} without a constraint)."""
  found = {name: optax.tree_utils.tree_get(opt_state, name) for name in TELEMETRY}
  return {name: value for name, value in found.items() if value is not None}


def zeros(with_telemetry: bool) -> Totals:
  """Empty totals for one pass."""
  names = ("loss", "correct", "count", "steps") + (TELEMETRY if with_telemetry else ())
  return {name: jnp.zeros((), jnp.float32) for name in names}


def accumulate(totals: Totals, step: Totals) -> Totals:
  """Adds one batch's sums, and its telemetry if ``step`` has some.

  Over a pass, ``fraction_at_bound`` is averaged over steps and
  ``largest_norm`` is the maximum over steps (NaN-propagating).
  """
  out = {name: totals[name] + step[name] for name in ("loss", "correct", "count")}
  out["steps"] = totals["steps"] + 1
  if "largest_norm" in step:
    out["fraction_at_bound"] = totals["fraction_at_bound"] + step["fraction_at_bound"]
    out["largest_norm"] = jnp.maximum(totals["largest_norm"], step["largest_norm"])
  return out


def finite_or_none(x: Any) -> float | None:
  """A JSON-friendly float: non-finite values (a diverged run) become None."""
  x = float(x)
  return x if math.isfinite(x) else None


def summarise(totals: Totals, prefix: str) -> dict[str, float | None]:
  """Host-side means of a pass: ``{prefix}loss``, ``{prefix}accuracy`` and telemetry."""
  t = {name: float(value) for name, value in jax.device_get(totals).items()}
  out = {
      f"{prefix}loss": finite_or_none(t["loss"] / t["count"]),
      f"{prefix}accuracy": t["correct"] / t["count"],
  }
  if "fraction_at_bound" in t:
    out["fraction_at_bound"] = finite_or_none(t["fraction_at_bound"] / t["steps"])
    out["largest_norm"] = finite_or_none(t["largest_norm"])
  return out


@jax.jit
def norm_stats(params: Any) -> dict[str, dict[str, jax.Array]]:
  """Largest and mean incoming-weight norm of the neurons of every kernel, on the
  device (dispatched, not read): ``{"dense1/kernel": {"max": ..., "mean": ...}, ...}``."""
  # Every kernel (rank >= 2 leaf); the incoming weights of a neuron are all axes but the last.
  norms = mnj.neuron_norms(params)
  flat, _ = jax.tree_util.tree_flatten_with_path(norms, is_leaf=lambda x: x is None)
  stats = {}
  for path, leaf in flat:
    if leaf is not None:
      stats[mnj.path_to_str(path)] = {"max": jnp.max(leaf), "mean": jnp.mean(leaf)}
  return stats


def norm_stats_to_json(stats: Any) -> dict[str, dict[str, float | None]]:
  """:func:`norm_stats` read to the host, as JSON-friendly floats."""
  return {layer: {k: finite_or_none(v) for k, v in s.items()} for layer, s in stats.items()}


def neuron_norm_stats(params: Any) -> dict[str, dict[str, float | None]]:
  """:func:`norm_stats`, read: e.g. ``{"dense1/kernel": {"max": 3.0, "mean": 1.2}, ...}``."""
  return norm_stats_to_json(jax.device_get(norm_stats(params)))
