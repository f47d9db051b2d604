"""The machine a figure was measured on."""

import pathlib

import pytest

from experiments import machine


def test_the_cpu_model_comes_from_cpuinfo_with_spaces_folded(monkeypatch):
  text = "processor\t: 0\nmodel name\t: Intel(R)  Xeon(R)   CPU @ 2.20GHz\nflags\t: fpu\n"
  real = pathlib.Path.read_text
  monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, **k: text
                      if str(self) == "/proc/cpuinfo" else real(self, *a, **k))
  assert machine.cpu_model() == "Intel(R) Xeon(R) CPU @ 2.20GHz"


def test_without_cpuinfo_platform_names_the_machine(monkeypatch):
  def missing(self, *args, **kwargs):
    raise OSError("no /proc here")
  monkeypatch.setattr(pathlib.Path, "read_text", missing)
  monkeypatch.setattr(machine.platform, "processor", lambda: "")
  monkeypatch.setattr(machine.platform, "machine", lambda: "arm64")
  assert machine.cpu_model() == "arm64"


@pytest.mark.parametrize("key", ["cpu_model", "cpu_count", "platform"])
def test_the_description_names_cpu_and_os(key):
  assert machine.describe_machine()[key]
