"""Where the examples come from: the archive by default, a prepared tfds copy with
--data-dir, tfds's mock in tests; the same arrays in the same order whichever path."""

import errno
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.cifar10 import array_cache, cifar10_archive, data_sources, input_pipeline, sharding
from experiments.cifar10.configs import get_config
from experiments.cifar10.main import main
from tests.cifar10.fake_archives import tfds_order, write_cifar10_archive

REPO = pathlib.Path(__file__).resolve().parents[2]
REAL_DATA_DIR = pathlib.Path(__file__).resolve().parents[3] / "shared" / "tensorflow_datasets"
TINY_RUN = ["--preset", "smoke", "--val-size", "5", "--train-subset", "8", "--eval-subset", "4",
            "--conv-features", "4", "--dense-features", "16", "--batch-size", "4",
            "--eval-batch-size", "4", "--num-devices", "1"]


def _assert_splits_equal(splits, arrays):
  for split, got in zip(("train", "test"), splits):
    assert isinstance(got, data_sources.Decoded)
    for kind in ("images", "labels"):
      want = arrays[f"{split}_{kind}"]
      assert getattr(got, kind).dtype == want.dtype
      np.testing.assert_array_equal(getattr(got, kind), want, err_msg=f"{split}_{kind}")


def test_without_data_dir_cifar10_comes_from_the_archive(fake_cifar10):
  _assert_splits_equal(data_sources.open_splits(get_config("smoke")), fake_cifar10.stored)


@pytest.mark.parametrize("num_devices", [1, 3])
def test_load_splits_takes_the_split_and_subsets_from_the_archive_arrays(fake_cifar10,
                                                                         num_devices):
  config = get_config("smoke", val_size=5, train_subset=4, eval_subset=3)
  splits, sizes = input_pipeline.load_splits(config, sharding.make_mesh(num_devices))
  assert sizes == (4, 3, 3)
  train_index, val_index = input_pipeline.split_indices(15, 5, seed=0)
  wanted = (("train", train_index[:4]), ("train", val_index[:3]), ("test", np.arange(3)))
  for got, (source, index) in zip(splits, wanted):
    np.testing.assert_array_equal(jax.device_get(got.images)[:len(index)],
                                  fake_cifar10.stored[f"{source}_images"][index])
    np.testing.assert_array_equal(jax.device_get(got.labels)[:len(index)],
                                  fake_cifar10.stored[f"{source}_labels"][index])


def test_the_command_trains_from_the_archive_and_a_second_run_reuses_it(fake_cifar10,
                                                                        tmp_path, monkeypatch,
                                                                        capsys):
  assert main([*TINY_RUN, "--workdir", str(tmp_path / "first")]) == 0
  out = capsys.readouterr().out
  assert "fetching" in out and "built" in out
  assert json.loads((tmp_path / "first" / "summary.json").read_text())["steps"] == 2

  def no_fetch(*args):
    raise AssertionError("fetched again")
  monkeypatch.setattr(cifar10_archive, "fetch", no_fetch)
  assert main([*TINY_RUN, "--workdir", str(tmp_path / "second")]) == 0
  assert "fetching" not in capsys.readouterr().out
  first, second = (json.loads((tmp_path / w / "metrics.jsonl").read_text().splitlines()[0])
                   for w in ("first", "second"))
  assert first["train_loss"] == second["train_loss"]  # The same data, the same run.


def test_a_bad_archive_is_one_clear_line_and_nothing_is_written(fake_cifar10, tmp_path,
                                                               capsys):
  data = bytearray(fake_cifar10.path.read_bytes())
  data[len(data) // 2] ^= 1
  bad = tmp_path / "bad.tar.gz"
  bad.write_bytes(bytes(data))
  assert main([*TINY_RUN, "--workdir", str(tmp_path / "w"), "--data-url", bad.as_uri()]) == 1
  err = capsys.readouterr().err
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "checksum" in errors[0] and "Traceback" not in err
  assert not (tmp_path / "w").exists()
  group = fake_cifar10.cache / "cifar10"
  assert [p.name for p in group.iterdir() if not p.name.endswith(".lock")] == []


_NO_TENSORFLOW = """
import json, sys
from experiments.cifar10 import cifar10_archive, data_sources
from experiments.cifar10.configs import Config
checksum, specs, download = json.loads(sys.argv[1])
cifar10_archive.ARCHIVE = cifar10_archive.ArchiveChecksum(*checksum)
cifar10_archive.ARRAYS = {k: cifar10_archive.ArraySpec(tuple(s), d, h)
                          for k, (s, d, h) in specs.items()}
train, test = data_sources.open_splits(Config(download=download))
print(json.dumps([len(train), len(test),
                  sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow",
                                                                  "tensorflow_datasets"})]))
"""


def test_the_archive_path_never_imports_tensorflow_and_a_built_copy_not_even_tfds(
    fake_cifar10):
  specs = {k: (list(s.shape), s.dtype, s.sha256) for k, s in cifar10_archive.ARRAYS.items()}
  runs = []
  for download in (True, False):  # The build, then a later start.
    result = subprocess.run(
        [sys.executable, "-c", _NO_TENSORFLOW,
         json.dumps([list(cifar10_archive.ARCHIVE), specs, download])],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    runs.append(json.loads(result.stdout.splitlines()[-1]))
  (n_train, n_test, built_with), (_, _, later_with) = runs
  assert (n_train, n_test) == (15, 4)
  assert built_with == ["tensorflow_datasets"]  # Its shuffler only; it needs no TensorFlow.
  assert later_with == []


def test_mock_data_comes_through_tfds_and_is_never_cached(mock_cifar10, tmp_path,
                                                          monkeypatch):
  monkeypatch.setenv(array_cache.CACHE_DIR_ENV, str(tmp_path / "cache"))
  for data_dir in (None, str(tmp_path / "anywhere")):
    train, test = data_sources.open_splits(get_config("smoke", data_dir=data_dir))
    assert not isinstance(train, data_sources.Decoded) and (len(train), len(test)) == (300, 300)
  assert not (tmp_path / "cache").exists()


class _Source:
  """A tfds-like source of given arrays, counting the examples it decodes."""

  def __init__(self, images, labels):
    self.images, self.labels, self.decoded = images, labels, 0

  def __len__(self):
    return len(self.labels)

  def __getitems__(self, indices):
    self.decoded += len(indices)
    return [{"image": self.images[i], "label": self.labels[i]} for i in indices]


def _copy(tmp_path, stored):
  """A prepared copy's folder, and sources that serve ``stored``."""
  version_dir = tmp_path / "data" / "cifar10" / cifar10_archive.TFDS_VERSION
  version_dir.mkdir(parents=True)
  (version_dir / "dataset_info.json").write_text("{}")
  return version_dir, tuple(_Source(stored[f"{s}_images"], stored[f"{s}_labels"])
                            for s in ("train", "test"))


def test_a_prepared_copy_is_decoded_once_checked_and_then_read_from_the_cache(fake_cifar10,
                                                                              tmp_path):
  version_dir, (train, test) = _copy(tmp_path, fake_cifar10.stored)
  _assert_splits_equal(data_sources.decoded_copy(train, test, version_dir),
                       fake_cifar10.stored)
  assert (train.decoded, test.decoded) == (15, 4)
  entry = data_sources.copy_cache_entry(version_dir)
  assert entry.parent == fake_cifar10.cache / "cifar10" and entry.is_dir()
  assert sorted(p.name for p in version_dir.iterdir()) == ["dataset_info.json"]
  # A later start: straight from the cache, before tfds is even asked.
  _assert_splits_equal(data_sources.read_cached_copy(version_dir), fake_cifar10.stored)
  _assert_splits_equal(data_sources.decoded_copy(train, test, version_dir),
                       fake_cifar10.stored)
  assert (train.decoded, test.decoded) == (15, 4)


def test_a_copy_that_is_not_cifar10_is_refused_and_not_cached(fake_cifar10, tmp_path):
  altered = dict(fake_cifar10.stored)
  altered["test_labels"] = (altered["test_labels"] + 1) % 10
  version_dir, (train, test) = _copy(tmp_path, altered)
  with pytest.raises(data_sources.DataUnavailableError,
                     match="does not decode to CIFAR-10: its test_labels"):
    data_sources.decoded_copy(train, test, version_dir)
  assert not data_sources.copy_cache_entry(version_dir).exists()


def test_without_a_writable_cache_a_copy_is_decoded_every_time(fake_cifar10, tmp_path,
                                                               monkeypatch, capsys):
  (tmp_path / "a_file").write_text("")
  monkeypatch.setenv(array_cache.CACHE_DIR_ENV, str(tmp_path / "a_file" / "cache"))
  version_dir, (train, test) = _copy(tmp_path, fake_cifar10.stored)
  for _ in range(2):
    _assert_splits_equal(data_sources.decoded_copy(train, test, version_dir),
                         fake_cifar10.stored)
  assert train.decoded == 30 and "cannot be written" in capsys.readouterr().err
  with pytest.raises(data_sources.DataUnavailableError, match=array_cache.CACHE_DIR_ENV):
    data_sources.open_splits(get_config("smoke"))  # The archive needs somewhere to go.


def test_a_full_disk_while_caching_falls_back_to_decoding_in_memory(fake_cifar10, tmp_path,
                                                                   monkeypatch, capsys):
  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(array_cache.np, "save", no_space)  # The entry's first write fails.
  version_dir, (train, test) = _copy(tmp_path, fake_cifar10.stored)
  _assert_splits_equal(data_sources.decoded_copy(train, test, version_dir),
                       fake_cifar10.stored)
  assert train.decoded == 15  # Decoded once, not again after the failed write.
  (line,) = [s for s in capsys.readouterr().err.splitlines() if "warning" in s]
  assert "cannot be written (No space left on device), so this start decodes the copy in " \
         "memory" in line
  entry = data_sources.copy_cache_entry(version_dir)
  assert [p.name for p in entry.parent.iterdir() if not p.name.endswith(".lock")] == []


class _DamagedSource(_Source):
  def __getitems__(self, indices):
    raise RuntimeError("FAILED_PRECONDITION: Riegeli: truncated chunk at byte 4096\nmore")


def test_a_damaged_copy_says_copy_it_again(fake_cifar10, tmp_path):
  version_dir, (train, test) = _copy(tmp_path, fake_cifar10.stored)
  damaged = _DamagedSource(fake_cifar10.stored["test_images"], fake_cifar10.stored["test_labels"])
  with pytest.raises(data_sources.DataUnavailableError) as error:
    data_sources.decoded_copy(train, damaged, version_dir)
  assert str(error.value) == (
      f"The copy in {version_dir} cannot be read (RuntimeError: FAILED_PRECONDITION: Riegeli: "
      f"truncated chunk at byte 4096). The copy is damaged or incomplete; copy it again, or "
      f"omit --data-dir to build CIFAR-10 from its canonical archive.")
  assert not data_sources.copy_cache_entry(version_dir).exists()


def _prepare(root: pathlib.Path, layout: str) -> None:
  if layout == "empty":
    root.mkdir()
  elif layout == "other_version":
    (root / "cifar10" / "1.0.0").mkdir(parents=True)
  elif layout == "file":
    root.write_text("")
  elif layout == "unfinished":  # A version folder without dataset_info.json.
    (root / "cifar10" / cifar10_archive.TFDS_VERSION).mkdir(parents=True)


@pytest.mark.parametrize("layout, cause", [
    ("missing", "does not exist"), ("empty", "holds no cifar10/ folder"),
    ("other_version", "holds ['1.0.0'], but no prepared version 3.0.2"),
    ("unfinished", "holds ['3.0.2'], but no prepared version 3.0.2"),
    ("file", "is not a directory")])
def test_a_data_dir_without_a_prepared_copy_names_the_real_cause(tmp_path, layout, cause):
  root = tmp_path / "data"
  _prepare(root, layout)
  before = sorted(tmp_path.rglob("*"))
  with pytest.raises(data_sources.DataUnavailableError) as error:
    data_sources.open_splits(get_config("smoke", data_dir=str(root)))
  message = str(error.value)
  assert cause in message and f"--data-dir {root}" in message
  assert "importlib_resources" not in message and "pip install" not in message
  assert "--data-url" in message and cifar10_archive.URL_ENV in message
  assert sorted(tmp_path.rglob("*")) == before  # Nothing created in or beside it.


def test_a_missing_data_dir_is_one_clear_line_from_the_command(tmp_path, capsys):
  assert main([*TINY_RUN, "--workdir", str(tmp_path / "w"),
               "--data-dir", str(tmp_path / "none")]) == 1
  err = capsys.readouterr().err
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "does not exist" in errors[0] and "Traceback" not in err
  assert "absl" not in err  # tfds's probe of the folder is not shown; the cause is.
  assert not (tmp_path / "w").exists()  # Nothing is created before the data has loaded.
  assert not (tmp_path / "none").exists()


def test_unactionable_tfds_warnings_are_dropped_and_others_kept(caplog):
  data_sources.import_tfds()
  absl = logging.getLogger("absl")
  with caplog.at_level(logging.WARNING, logger="absl"):
    absl.warning("OpenCV is not installed. We recommend using OpenCV because it is faster.")
    absl.warning("Variant folder %s has no %s", "/x/cifar10/3.0.2", "dataset_info.json")
    absl.warning("Something %s went wrong", "else")
  assert caplog.messages == ["Something else went wrong"]


def test_two_copies_never_share_a_cache_entry(tmp_path):
  copies = []
  for name in ("a", "b"):
    version_dir = tmp_path / name / "cifar10" / "3.0.2"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text("{}")
    copies.append(version_dir)
  a, b = (data_sources.copy_cache_entry(c) for c in copies)
  assert a != b and a.parent == b.parent == array_cache.cache_root() / "cifar10"
  assert data_sources.copy_cache_entry(copies[0]) == a
  (copies[0] / "dataset_info.json").write_text('{"changed": 1}')
  assert data_sources.copy_cache_entry(copies[0]) != a


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DATA_DIR / "cifar10").exists(),
                    reason=f"real CIFAR-10 not found at {REAL_DATA_DIR} (tfds-built array_record)")
def test_a_prepared_copy_and_the_archive_give_the_same_arrays_bit_for_bit(tmp_path,
                                                                          monkeypatch):
  monkeypatch.setenv(array_cache.CACHE_DIR_ENV, str(tmp_path / "cache"))
  copy = get_config("article", data_dir=str(REAL_DATA_DIR))
  before = sorted((p, p.stat().st_mtime_ns) for p in REAL_DATA_DIR.rglob("*"))

  # The prepared copy, decoded once (and checked against CIFAR-10's checksums).
  train, test = data_sources.open_splits(copy)
  stored = {"train_images": train.images, "train_labels": train.labels,
            "test_images": test.images, "test_labels": test.labels}
  # Its example ids are the archive's indices in the order the test derives on its own.
  tfds = data_sources.import_tfds()
  for split in ("train", "test"):
    source = tfds.data_source("cifar10", split=split, data_dir=str(REAL_DATA_DIR))
    picks = np.random.default_rng(0).choice(len(source), 50, replace=False).tolist()
    ids = [ex["id"] for ex in source.__getitems__(picks)]
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
    order = tfds_order(split, len(source))
    assert ids == [f"{split}_{order[j]:05d}" for j in picks]

  # A later start reads the cache, without tfds.
  def unused(*args, **kwargs):
    raise AssertionError("tfds was used")
  with monkeypatch.context() as patch:
    patch.setattr(data_sources, "import_tfds", unused)
    patch.setattr(data_sources, "decode_examples", unused)
    _assert_splits_equal(data_sources.open_splits(copy), stored)

  # An archive in the real format holding the same examples, in the archive's order.
  archive_arrays = {}
  for split in ("train", "test"):
    order = tfds_order(split, len(stored[f"{split}_labels"]))
    for kind in ("images", "labels"):
      array = np.empty_like(stored[f"{split}_{kind}"])
      array[order] = stored[f"{split}_{kind}"]
      archive_arrays[f"{split}_{kind}"] = array
  path = tmp_path / "cifar-10-binary.tar.gz"
  monkeypatch.setattr(cifar10_archive, "ARCHIVE", write_cifar10_archive(path, archive_arrays))
  from_archive = data_sources.open_splits(get_config("article", data_url=path.as_uri()))
  _assert_splits_equal(from_archive, stored)  # Checked against the real ARRAYS, too.
  assert sorted((p, p.stat().st_mtime_ns) for p in REAL_DATA_DIR.rglob("*")) == before


_TRAIN_SHARD = "cifar10-train.array_record-00000-of-00001"


def _damaged_real_copy(root: pathlib.Path, damage: str) -> pathlib.Path:
  """A copy of the real prepared CIFAR-10 under ``root`` (its small files copied, its
  shards linked) whose train shard is truncated, has one flipped bit, or is missing."""
  real = REAL_DATA_DIR / "cifar10" / cifar10_archive.TFDS_VERSION
  version_dir = root / "cifar10" / cifar10_archive.TFDS_VERSION
  version_dir.mkdir(parents=True)
  for path in real.iterdir():
    if path.suffix in (".json", ".txt"):
      shutil.copyfile(path, version_dir / path.name)
    elif path.name != _TRAIN_SHARD or damage == "missing":
      (version_dir / path.name).symlink_to(path)
  shard = version_dir / _TRAIN_SHARD
  if damage == "truncated":
    with open(real / _TRAIN_SHARD, "rb") as f:
      shard.write_bytes(f.read(real.joinpath(_TRAIN_SHARD).stat().st_size // 2))
  elif damage == "bit flipped":
    shutil.copyfile(real / _TRAIN_SHARD, shard)
    with open(shard, "r+b") as f:  # A byte in the data of an early chunk.
      f.seek(1_000_000)
      byte = f.read(1)[0]
      f.seek(1_000_000)
      f.write(bytes([byte ^ 0x10]))
  elif damage == "missing":
    shard.unlink()
  return version_dir


@pytest.mark.skipif(not (REAL_DATA_DIR / "cifar10").exists(),
                    reason=f"real CIFAR-10 not found at {REAL_DATA_DIR} (tfds-built array_record)")
@pytest.mark.parametrize("damage", ["truncated", "bit flipped", "missing"])
def test_a_damaged_real_copy_is_one_line_exit_1_and_nothing_written(tmp_path, damage):
  version_dir = _damaged_real_copy(tmp_path / "data", damage)
  cache, workdir = tmp_path / "cache", tmp_path / "w"

  def state():
    return sorted((p.name, p.is_symlink(), p.lstat().st_size, p.lstat().st_mtime_ns)
                  for p in version_dir.iterdir())
  before = state()
  done = subprocess.run(
      [sys.executable, "-m", "experiments.cifar10", *TINY_RUN, "--workdir", str(workdir),
       "--data-dir", str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True,
      timeout=300, env=dict(os.environ, **{array_cache.CACHE_DIR_ENV: str(cache)}))
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
  (line,) = [s for s in done.stderr.splitlines() if s.strip()]
  assert line.startswith(f"error: The copy in {version_dir} cannot be read (")
  assert line.endswith("The copy is damaged or incomplete; copy it again, or omit --data-dir "
                       "to build CIFAR-10 from its canonical archive.")
  assert state() == before and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"]
  assert [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_the_command_trains_from_the_archive_on_a_full_disk(fake_cifar10, tmp_path, monkeypatch,
                                                            capsys):
  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(array_cache.np, "save", no_space)  # The cache entry cannot be written.
  assert main([*TINY_RUN, "--workdir", str(tmp_path / "w")]) == 0
  err = capsys.readouterr().err
  assert "so this start decodes CIFAR-10 in memory" in err and "Traceback" not in err
  assert json.loads((tmp_path / "w" / "summary.json").read_text())["steps"] == 2
  group = fake_cifar10.cache / "cifar10"
  assert [p.name for p in group.iterdir() if not p.name.endswith(".lock")] == []
