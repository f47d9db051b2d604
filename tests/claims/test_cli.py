"""The command line: flags, exit codes, and --report-only on the committed results."""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from experiments.claims.budgets import BUDGETS
from experiments.claims.cli import main
from experiments.claims.registry import EXPERIMENTS
from experiments.claims.report import read_sections

REPO = pathlib.Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "results"
CPU = BUDGETS["cpu"]


@pytest.mark.parametrize("argv, message", [
    (["e9", "--budget", "cpu"], "invalid choice: 'e9'"),
    (["e1"], "--budget"),
    (["e1", "--budget", "gpu"], "invalid choice: 'gpu'"),
    (["e1", "--budget", "cpu", "--max-runs", "0"], "must be >= 1"),
])
def test_bad_flags_exit_with_code_2(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_report_only_on_a_conflicting_directory_exits_1(tmp_path, capsys):
  spec = EXPERIMENTS["e3"].runs(CPU)[0]
  workdir = tmp_path / "cpu" / "short" / spec.name
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps({**spec.config.to_json(), "seed": 7}))
  code = main(["e3", "--budget", "cpu", "--runs-dir", str(tmp_path), "--results-dir",
               str(tmp_path / "out"), "--report-only"])
  assert code == 1 and "seed: on disk 7 vs sweep 0" in capsys.readouterr().err


def _committed_copy(tmp_path, slug):
  """A copy of the committed results of ``slug`` (results.md, notes.md, figures; not the
  kept runs, see test_archive.py)."""
  shutil.copytree(RESULTS / slug, tmp_path / "out" / slug, ignore=shutil.ignore_patterns("runs"))
  return tmp_path / "out" / slug / "results.md"


@pytest.mark.parametrize("key", sorted(EXPERIMENTS))
def test_report_only_without_the_runs_keeps_the_committed_section(tmp_path, key, capsys):
  # Every experiment has a committed cpu-proxy section.
  path = _committed_copy(tmp_path, EXPERIMENTS[key].slug)
  before = read_sections(path)
  assert "cpu-proxy" in before
  code = main([key, "--budget", "cpu-proxy", "--runs-dir", str(tmp_path / "runs"),
               "--results-dir", str(tmp_path / "out"), "--report-only"])
  assert code == 0 and read_sections(path) == before
  assert "kept the section already in" in capsys.readouterr().out


def test_report_only_rerenders_the_committed_section_from_the_runs(tmp_path, fabricate,
                                                                   results_of):
  path = _committed_copy(tmp_path, "e1_max_norm_vs_none")
  notes = (path.parent / "notes.md").read_text().strip()
  for r in results_of(EXPERIMENTS["e1"], CPU, tmp_path / "runs"):
    fabricate(r.workdir, r.spec, val=0.45, test=0.46)
  code = main(["e1", "--budget", "cpu", "--runs-dir", str(tmp_path / "runs"), "--results-dir",
               str(tmp_path / "out"), "--data-dir", "/data", "--report-only"])
  text = path.read_text()
  section = read_sections(path)["cpu"]
  assert code == 0 and notes in text
  assert "- **Runs complete:** 6 of 6." in section
  assert "| none | cpu | 3 | 0.450 ± 0.000 | 0.460 ± 0.000 |" in section
  assert (f"python -m experiments.claims e1 --budget cpu --data-dir /data --runs-dir "
          f"{tmp_path / 'runs'} --results-dir {tmp_path / 'out'}") in section
  assert section.count("--data-dir /data --workdir") == 6


def test_the_budget_flag_takes_cpu_proxy(tmp_path):
  code = main(["e2", "--budget", "cpu-proxy", "--runs-dir", str(tmp_path / "runs"),
               "--results-dir", str(tmp_path / "out"), "--report-only"])
  section = read_sections(tmp_path / "out" / "e2_c_and_placement" / "results.md")["cpu-proxy"]
  runs = EXPERIMENTS["e2"].runs(BUDGETS["cpu-proxy"])
  assert code == 0 and f"- **Runs complete:** 0 of {len(runs)}; not run yet:" in section


def test_report_only_refuses_to_shrink_a_committed_section(tmp_path, fabricate, results_of,
                                                          capsys):
  path = _committed_copy(tmp_path, "e1_max_norm_vs_none")
  before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
  one = results_of(EXPERIMENTS["e1"], CPU, tmp_path / "runs")[0]
  fabricate(one.workdir, one.spec, val=0.45, test=0.46)
  argv = ["e1", "--budget", "cpu", "--runs-dir", str(tmp_path / "runs"), "--results-dir",
          str(tmp_path / "out"), "--report-only"]
  assert main(argv) == 1
  (line,) = [s for s in capsys.readouterr().err.splitlines() if s.startswith("error:")]
  assert "holds 6 of 6 complete runs, and only 1 are complete here" in line
  assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
  assert main([*argv, "--allow-shrink"]) == 0
  assert "- **Runs complete:** 1 of 6" in read_sections(path)["cpu"]


def _tree(root):
  """Every file under ``root``, path -> bytes (a directory -> None)."""
  return {p: (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


_DAMAGED_RECORDS = {  # name -> (file, damage, what the line says)
    "host garbage": ("host.json", b"{not json", "host.json, line 1: not JSON"),
    "host without cpu_model": ("host.json", b'{"cpu_count": 2}',
                               "host.json: 'cpu_model' is missing"),
    "host null cpu_model": ("host.json", b'{"cpu_model": null}', "host.json: 'cpu_model' is null"),
    "host null": ("host.json", b"null", "host.json, line 1: not a JSON object"),
    "host junk bytes": ("host.json", b'{"cpu_model": "\xff\xfe"}',
                        "host.json, line 1: not UTF-8 text"),
    "host a directory": ("host.json", None, "host.json: is a directory"),
    "steps garbage line": ("steps.jsonl", b'{"step": 1}\n{"step": \n',
                           "steps.jsonl, line 2: not a JSON object"),
    "summary without test_accuracy": ("summary.json", b'{"test_loss": 1.9}',
                                      "summary.json: 'test_accuracy' is missing"),
    "summary text accuracy": ("summary.json", b'{"test_accuracy": "0.46"}',
                              "summary.json: 'test_accuracy' is '0.46', not a number"),
    "summary null diverged": ("summary.json", b'{"test_accuracy": 0.46, "diverged": null}',
                              "summary.json: 'diverged' is None, not true or false"),
}


def _damaged_run(tmp_path, fabricate, results_of, name):
  one = results_of(EXPERIMENTS["e1"], CPU, tmp_path / "runs")[0]
  fabricate(one.workdir, one.spec, val=0.45, test=0.46, host={"cpu_model": "x"})
  file, damage, expected = _DAMAGED_RECORDS[name]
  path = one.workdir / file
  path.unlink(missing_ok=True)
  if damage is None:
    path.mkdir()
  else:
    path.write_bytes(damage)
  return ["e1", "--budget", "cpu", "--runs-dir", str(tmp_path / "runs"), "--results-dir",
          str(tmp_path / "out"), "--report-only"], f"{path}{expected[len(file):]}"


@pytest.mark.parametrize("name", sorted(_DAMAGED_RECORDS))
def test_report_only_names_a_damaged_record_and_writes_nothing(tmp_path, fabricate, results_of,
                                                               name, capsys):
  argv, expected = _damaged_run(tmp_path, fabricate, results_of, name)
  before = _tree(tmp_path)
  assert main(argv) == 1
  (line,) = capsys.readouterr().err.splitlines()
  assert line.startswith(f"error: {expected}")
  assert _tree(tmp_path) == before


def test_the_command_names_a_damaged_host_record_in_one_line(tmp_path, fabricate, results_of):
  argv, expected = _damaged_run(tmp_path, fabricate, results_of, "host a directory")
  before = _tree(tmp_path)
  done = subprocess.run([sys.executable, "-m", "experiments.claims", *argv], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 1, done.stderr
  assert done.stderr.splitlines() == [f"error: {expected}, not a file"]
  assert _tree(tmp_path) == before
