"""The workdir's JSON files survive a kill at any moment: whole files are replaced
atomically, and a row torn by a kill is not read as a row."""

import os
import stat

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


@pytest.mark.parametrize("content, message", [
    (b'{"epoch": 1}\n{"epo\n{"epoch": 3}\n', "line 2: not a JSON object"),
    (b'{"epoch": 1}\n[1, 2]\n', "line 2: not a JSON object"),
    (b'{"epoch": 1}\nnull\n', "line 2: not a JSON object"),
    (b'{"epoch": 1}\n{"loss": 2.0}\n', "line 2: no integer 'epoch'"),
    (b'{"epoch": null}\n', "line 1: no integer 'epoch'"),
    (b'{"epoch": 1}\n\xff\xfe junk\n', "line 2: not UTF-8 text (junk bytes)"),
])
def test_a_damaged_complete_row_names_file_and_line(tmp_path, content, message):
  (tmp_path / records.METRICS).write_bytes(content)
  with pytest.raises(records.RecordsError) as error:
    records.read_metrics(tmp_path)
  assert str(error.value) == f"{tmp_path / records.METRICS}, {message}"


def test_a_directory_in_place_of_a_record_file_is_named(tmp_path):
  (tmp_path / records.METRICS).mkdir()
  (tmp_path / records.SUMMARY).mkdir()
  for read, name in ((records.read_metrics, records.METRICS),
                     (records.read_summary, records.SUMMARY)):
    with pytest.raises(records.RecordsError) as error:
      read(tmp_path)
    assert str(error.value) == f"{tmp_path / name}: is a directory, not a file"


@pytest.mark.parametrize("content, message", [
    ("{\n  \"test_accuracy\": 0.5,\n  junk\n}", "line 3: not JSON"),
    ("[1]", "line 1: not a JSON object"),
])
def test_a_damaged_summary_names_file_and_line(tmp_path, content, message):
  (tmp_path / records.SUMMARY).write_text(content)
  with pytest.raises(records.RecordsError) as error:
    records.read_summary(tmp_path)
  assert str(error.value) == f"{tmp_path / records.SUMMARY}, {message}"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_get_the_modes_the_umask_allows(tmp_path, umask):
  old = os.umask(umask)
  try:
    records.write_config(tmp_path, PRESETS["smoke"])
    records.write_summary(tmp_path, {"test_accuracy": 0.5})
    records.append_metrics(tmp_path, {"epoch": 1})
  finally:
    os.umask(old)
  for name in (records.CONFIG, records.SUMMARY, records.METRICS):
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_whole_files_are_replaced_not_rewritten_in_place(tmp_path, monkeypatch):
  records.write_config(tmp_path, PRESETS["smoke"])
  before = (tmp_path / records.CONFIG).read_text()

  def fail(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(records.os, "replace", fail)
  with pytest.raises(records.RecordsError, match="config.json: cannot be written \\(disk full\\)"):
    records.write_config(tmp_path, PRESETS["article"])
  assert (tmp_path / records.CONFIG).read_text() == before  # The old file, whole.
  assert [p.name for p in tmp_path.iterdir()] == [records.CONFIG]  # No temporary left.
