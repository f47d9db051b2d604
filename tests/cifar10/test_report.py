"""One run's results page, from fabricated run files."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments.cifar10 import report

REPO = pathlib.Path(__file__).resolve().parents[2]


_SUMMARY = {"test_accuracy": 0.61, "test_loss": 1.2, "val_accuracy": 0.4, "steps": 10,
            "num_params": 100, "backend": "cpu", "num_devices": 1, "jax_version": "0"}
_ROW = {"epoch": 1, "step": 10, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.1,
        "val_accuracy": 0.4, "seconds": 100.0, "img_per_s": 50.0, "fraction_at_bound": 0.0,
        "largest_norm": 1.5, "neuron_norms": {"dense1/kernel": {"max": 1.5, "mean": 0.75}}}


def _write_run(workdir, norms, fractions, steps=()):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(json.dumps({"epochs": len(norms), "batch_size": 128,
                                                   "max_norm": 3.0}))
  rows = [{"epoch": e + 1, "step": 10 * (e + 1), "train_loss": 1.0, "train_accuracy": 0.5,
           "val_loss": 1.1, "val_accuracy": 0.4, "seconds": 100.0, "img_per_s": 50.0,
           "fraction_at_bound": f, "largest_norm": n,
           "neuron_norms": {"dense1/kernel": {"max": n, "mean": n / 2}}}
          for e, (n, f) in enumerate(zip(norms, fractions))]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (workdir / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
  (workdir / "summary.json").write_text(json.dumps({
      "test_accuracy": 0.61, "test_loss": 1.2, "val_accuracy": 0.4, "steps": 10 * len(norms),
      "num_params": 100, "backend": "cpu", "num_devices": 1, "jax_version": "0"}))
  (workdir / "console.log").write_text("start\nbar 1%\rbar 50%\rbar 100%\nepoch 1: done\n")


def _step(step, epoch, fraction, norm):
  return {"step": step, "epoch": epoch, "fraction_at_bound": fraction, "loss": 1.0,
          "neuron_norms": {"dense1/kernel": {"max": norm, "mean": norm / 2}}}


def test_a_run_where_c_binds_says_from_when(tmp_path):
  _write_run(tmp_path / "w", norms=[2.0, 3.0, 3.0], fractions=[0.0, 0.01, 0.2],
             steps=[_step(5, 1, 0.0, 1.9), _step(15, 2, 0.002, 3.0), _step(25, 3, 0.3, 3.0)])
  path = report.render(tmp_path / "w", tmp_path / "out", commands=["python -m x"],
                       host="a CPU")
  text = path.read_text()
  assert "**c = 3 bound from epoch 2 on**" in text
  assert "first logged step with a neuron at the bound was step 15 (epoch 2" in text
  assert "20.00% of the dense1/kernel neurons" in text
  assert "0.6100" in text and "a CPU" in text and "python -m x" in text
  for name in ("accuracy_loss.png", "dense1_norms.png", "fraction_at_bound.png",
               "config.json", "metrics.jsonl", "steps.jsonl", "summary.json"):
    assert (tmp_path / "out" / name).stat().st_size > 0, name
  assert (tmp_path / "out" / "console.log").read_text() == (
      "start\nbar 100%\nepoch 1: done\n")


def test_a_run_where_c_never_binds_says_so_with_the_largest_norm(tmp_path):
  _write_run(tmp_path / "w", norms=[1.5, 1.72], fractions=[0.0, 0.0],
             steps=[_step(5, 1, 0.0, 1.5)])
  text = report.render(tmp_path / "w", tmp_path / "out", commands=[]).read_text()
  assert "**c = 3 never bound.**" in text and "was 1.720, below c" in text


def test_an_unfinished_run_is_refused(tmp_path, capsys):
  (tmp_path / "w").mkdir()
  assert report.main(["--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "o")]) == 1
  assert "has not finished" in capsys.readouterr().err
  with pytest.raises(FileNotFoundError):
    report.render(tmp_path / "w", tmp_path / "o", commands=[])


def _snapshot(root):
  return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage, message", [
    (("metrics.jsonl", '{"epoch": 1}\n{junk\n'), "metrics.jsonl, line 2: not a JSON object"),
    (("steps.jsonl", '{"loss": 1.0}\n'), "steps.jsonl, line 1: no integer 'step'"),
    (("summary.json", '{"test_accuracy": 0.6,\n'), "summary.json, line 2: not JSON"),
    (("config.json", "\xff"), "config.json, line 1: not JSON"),
    (("summary.json", '{"test_accuracy": 0.6}'), "summary.json: 'steps' is missing"),
    (("summary.json", json.dumps({**_SUMMARY, "num_params": None})),
     "summary.json: 'num_params' is null, not an integer"),
    (("config.json", '{"epochs": 1, "max_norm": 3.0}'), "config.json: 'batch_size' is missing"),
    (("config.json", '{"epochs": null, "batch_size": 128, "max_norm": 3.0}'),
     "config.json: 'epochs' is null, not an integer"),
    (("config.json", '{"epochs": 1, "batch_size": 128}'), "config.json: 'max_norm' is missing"),
    (("metrics.jsonl", "\n" + json.dumps({**_ROW, "seconds": None}) + "\n"),
     "metrics.jsonl, line 2: 'seconds' is null, not a number"),
    (("metrics.jsonl", json.dumps({**_ROW, "neuron_norms": {"dense1/kernel": None}}) + "\n"),
     "metrics.jsonl, line 1: the neuron norms of 'dense1/kernel' are None"),
    (("metrics.jsonl", ""), "metrics.jsonl: no epoch's row, next to a summary.json"),
    (("steps.jsonl", '{"step": 3, "fraction_at_bound": 0.1}\n'),
     "steps.jsonl, line 1: 'epoch' is missing"),
    (("out", None), "--out {out} exists and is not a directory"),
    (("same", None), "--out {out} is the run's --workdir"),
])
def test_a_damaged_run_or_a_bad_out_is_one_line_and_exit_1(tmp_path, damage, message):
  workdir, out = tmp_path / "w", tmp_path / "o"
  _write_run(workdir, norms=[1.5], fractions=[0.0])
  name, content = damage
  if name == "out":
    out.write_text("a file")
  elif name == "same":
    out = workdir
  else:
    (workdir / name).write_text(content)
  before = _snapshot(tmp_path)
  result = subprocess.run([sys.executable, "-m", "experiments.cifar10.report", "--workdir",
                           str(workdir), "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
  (line,) = result.stderr.splitlines()
  assert message.format(out=out) in line
  assert _snapshot(tmp_path) == before


def test_a_diverged_run_with_nulls_where_numbers_diverged_is_rendered(tmp_path):
  workdir = tmp_path / "w"
  _write_run(workdir, norms=[1.5], fractions=[0.0])
  row = {**_ROW, "train_loss": None, "val_loss": None, "largest_norm": None,
         "neuron_norms": {"dense1/kernel": {"max": None, "mean": None}}}
  (workdir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
  (workdir / "summary.json").write_text(json.dumps({**_SUMMARY, "test_accuracy": None,
                                                    "test_loss": None}))
  text = report.render(workdir, tmp_path / "o", commands=["x"]).read_text()
  assert "no neuron norm of dense1/kernel was recorded" in text
  assert "**Test accuracy:** – (test loss –)" in text
