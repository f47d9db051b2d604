"""Budgets: their schedules, the descriptions generated from them, and clear errors."""

import dataclasses

import pytest

from experiments.cifar10.configs import get_config
from experiments.claims.budgets import BUDGETS, Budget, get_budget


def test_the_budgets_are_cpu_cpu_proxy_cpu_proxy_45k_and_full():
  assert sorted(BUDGETS) == ["cpu", "cpu-proxy", "cpu-proxy-45k", "full"]
  assert all(name == b.name for name, b in BUDGETS.items())


def test_cpu_proxy_45k_is_the_proxy_network_and_recipe_on_the_whole_training_split():
  proxy, whole = BUDGETS["cpu-proxy"].config("regular"), BUDGETS["cpu-proxy-45k"].config(
      "regular")
  same = ("conv_features", "dense_features", "learning_rate", "optimizer", "batch_size",
          "lr_decay", "max_norm", "constrain")
  assert {k: getattr(whole, k) for k in same} == {k: getattr(proxy, k) for k in same}
  assert (whole.train_subset, whole.eval_subset) == (None, None)  # 45,000; full evaluation.
  assert whole.epochs * 45_000 > 2 * proxy.epochs * proxy.train_subset  # More steps.


def test_cpu_proxy_schedules_share_a_smaller_network_and_data():
  proxy, article = BUDGETS["cpu-proxy"], get_config("article")
  regular, short = proxy.config("regular"), proxy.config("short")
  same = ("conv_features", "dense_features", "train_subset", "eval_subset", "batch_size",
          "lr_decay")
  assert {k: getattr(regular, k) for k in same} == {k: getattr(short, k) for k in same}
  assert regular.dense_features < article.dense_features and regular.train_subset
  assert regular.log_every == 0 and short.log_every >= 1 and short.epochs < regular.epochs


def test_full_is_the_article_and_cpu_is_the_article_cut_short():
  full, cpu = BUDGETS["full"], BUDGETS["cpu"]
  assert full.config("regular") == get_config("article")
  assert full.config("short") == get_config("article", epochs=1, log_every=10)
  assert cpu.config("regular").conv_features == 128 and cpu.config("short").log_every == 1


@pytest.mark.parametrize("name, schedule, text", [
    ("cpu", "regular", "the article's network and recipe, 1 epoch on the first 4,096 training "
                       "images (32 steps of 128); validation and test on the first 1,000 "
                       "images each"),
    ("cpu", "short", "the article's network, 1 epoch on the first 2,560 training images (20 "
                     "steps of 128), every step logged; validation and test on the first 500 "
                     "images each"),
    ("full", "regular", "the article's network and recipe, 10 epochs over 45,000 training "
                        "images (3,520 steps of 128); validation on 5,000 and test on 10,000 "
                        "images"),
])
def test_descriptions_are_generated_from_the_overrides(name, schedule, text):
  assert BUDGETS[name].describe(schedule) == text


def test_cpu_proxy_is_described_from_its_own_numbers():
  c = BUDGETS["cpu-proxy"].config("regular")
  steps = c.epochs * -(-c.train_subset // c.batch_size)
  assert BUDGETS["cpu-proxy"].describe("regular") == (
      f"the article's network at conv width {c.conv_features} and dense width "
      f"{c.dense_features}, learning rate {c.learning_rate:g} (the article's: 0.0001), "
      f"{c.epochs} epochs on the first {c.train_subset:,} training images ({steps} steps of "
      f"128); validation and test on the first {c.eval_subset:,} images each")


def test_changing_a_number_changes_its_description():
  proxy = BUDGETS["cpu-proxy"]
  edited = dataclasses.replace(proxy, regular={**proxy.regular, "epochs": 20,
                                               "optimizer": "sgd"})
  c = edited.config("regular")
  steps = 20 * -(-c.train_subset // c.batch_size)
  assert f"20 epochs on the first {c.train_subset:,} training images ({steps} steps" in (
      edited.describe("regular"))
  assert f"optimizer sgd, learning rate {c.learning_rate:g}" in edited.describe("regular")


@pytest.mark.parametrize("kwargs, message", [
    (dict(name=""), "non-empty directory name"),
    (dict(name="a/b"), "non-empty directory name"),
    (dict(short=dict(epochs=1)), "needs log_every >= 1"),
    (dict(regular=dict(epoch=3)), "bad regular overrides"),
    (dict(short=dict(log_every=1, train_subset=0)), "bad short overrides: train_subset"),
])
def test_bad_budgets_are_clear_errors(kwargs, message):
  base = dict(name="x", regular={}, short=dict(log_every=1))
  with pytest.raises(ValueError, match=message):
    Budget(**{**base, **kwargs})


def test_unknown_names_are_clear_errors():
  with pytest.raises(ValueError, match=r"Unknown budget 'gpu'; choose from \['cpu', "
                                       r"'cpu-proxy', 'cpu-proxy-45k', 'full'\]"):
    get_budget("gpu")
