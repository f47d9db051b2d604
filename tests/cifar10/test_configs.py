"""Config: presets, the per-field checks, and what identifies a run across versions."""

import dataclasses
import math

import pytest

from experiments.cifar10.configs import (
    PRESETS,
    Config,
    ConfigError,
    get_config,
    identity_fields,
)


def test_the_article_preset_is_the_articles_recipe():
  c = PRESETS["article"]
  assert (c.epochs, c.batch_size, c.learning_rate, c.lr_decay) == (10, 128, 1e-4, 1e-6)
  assert (c.optimizer, c.adam_eps, c.max_norm, c.constrain) == ("adam", 1e-7, 3.0, "dense1")
  assert (c.conv_features, c.dense_features, c.val_size) == (128, 1024, 5000)
  assert (c.train_subset, c.eval_subset, c.log_every) == (None, None, 0)


@pytest.mark.parametrize("overrides, field, message", [
    (dict(optimizer="rmsprop"), "optimizer", "must be one of ('adam', 'sgd')"),
    (dict(constrain="conv1"), "constrain", "must be one of"),
    (dict(shard_dense1="both"), "shard_dense1", "must be one of ('in', 'out', None)"),
    (dict(momentum=1.0), "momentum", "must be in [0, 1)"),
    (dict(momentum=-0.1), "momentum", "must be in [0, 1)"),
    (dict(dropout=1.0), "dropout", "must be in [0, 1)"),
    (dict(dropout=math.nan), "dropout", "must be in [0, 1)"),
    (dict(conv_dropout=-0.5), "conv_dropout", "must be in [0, 1)"),
    (dict(log_every=-1), "log_every", "must be >= 0"),
    (dict(epochs=0), "epochs", "must be >= 1"),
    (dict(learning_rate=math.nan), "learning_rate", "must be finite and > 0"),
    (dict(learning_rate=math.inf), "learning_rate", "must be finite and > 0"),
    (dict(max_norm=-3.0), "max_norm", "must be finite and > 0"),
    (dict(max_norm=math.inf), "max_norm", "use --no-max-norm"),
    (dict(train_subset=0), "train_subset", "must be >= 1"),
    (dict(num_devices=0), "num_devices", "must be >= 1"),
])
def test_bad_values_are_errors_that_name_the_field(overrides, field, message):
  with pytest.raises(ConfigError) as info:
    get_config("article", **overrides)
  assert info.value.field == field and message in info.value.message
  assert str(info.value).startswith(field)


def test_none_skips_the_check_of_an_optional_field():
  assert get_config("article", max_norm=None, train_subset=None).max_norm is None


def test_a_config_written_before_a_field_existed_reads_with_that_fields_default():
  old = PRESETS["article"].to_json()
  del old["log_every"], old["shard_dense1"]  # As written by an older version.
  assert Config.from_json(old) == PRESETS["article"]
  assert identity_fields(old) == identity_fields(PRESETS["article"])
  assert identity_fields({**old, "seed": 1}) != identity_fields(PRESETS["article"])


def test_an_unknown_field_is_refused():
  with pytest.raises(ConfigError, match="bogus is not a field"):
    Config.from_json({**PRESETS["article"].to_json(), "bogus": 1})


def test_where_the_data_lives_and_how_long_to_train_do_not_identify_a_run():
  a = PRESETS["article"]
  b = dataclasses.replace(a, data_dir="/elsewhere", epochs=20, keep_checkpoints=5,
                          num_devices=2, shard_dense1="in", download=False)
  assert identity_fields(a) == identity_fields(b)
  assert identity_fields(a) != identity_fields(dataclasses.replace(a, max_norm=4.0))
