"""The workdir's JSON files survive a kill at any moment: whole files are replaced
atomically, and a row torn by a kill is not read as a row."""

import json

import pytest

from experiments.cifar10 import records
from experiments.cifar10.configs import PRESETS


def test_rows_round_trip_and_truncate(tmp_path):
  for epoch in (1, 2, 3):
    records.append_metrics(tmp_path, {"epoch": epoch, "loss": 1.0 / epoch})
  assert [r["epoch"] for r in records.read_metrics(tmp_path)] == [1, 2, 3]
  records.truncate_metrics(tmp_path, 2)
  assert [r["epoch"] for r in records.read_metrics(tmp_path)] == [1, 2]


def test_a_row_torn_by_a_kill_is_skipped_then_dropped(tmp_path):
  records.append_step(tmp_path, {"step": 1, "loss": 2.0})
  with open(tmp_path / records.STEPS, "a") as f:
    f.write('{"step": 2, "lo')  # The process died inside this write.
  assert records.read_steps(tmp_path) == [{"step": 1, "loss": 2.0}]
  records.truncate_steps(tmp_path, 10)  # As a resumed run does first.
  assert (tmp_path / records.STEPS).read_text() == '{"step": 1, "loss": 2.0}\n'
  records.append_step(tmp_path, {"step": 2, "loss": 1.5})
  assert [r["step"] for r in records.read_steps(tmp_path)] == [1, 2]


def test_a_damaged_complete_row_is_an_error_not_skipped(tmp_path):
  (tmp_path / records.METRICS).write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
  with pytest.raises(json.JSONDecodeError):
    records.read_metrics(tmp_path)


def test_whole_files_are_replaced_not_rewritten_in_place(tmp_path, monkeypatch):
  records.write_config(tmp_path, PRESETS["smoke"])
  before = (tmp_path / records.CONFIG).read_text()

  def fail(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(records.os, "replace", fail)
  with pytest.raises(OSError):
    records.write_config(tmp_path, PRESETS["article"])
  assert (tmp_path / records.CONFIG).read_text() == before  # The old file, whole.
  assert [p.name for p in tmp_path.iterdir()] == [records.CONFIG]  # No temporary left.
