"""experiments/tpu/vm_setup.sh without a TPU VM: syntax, shellcheck, and the commands it runs.

The script runs under bash with a PATH of stubs: sudo, apt-cache, python3.X, gcloud, gcsfuse,
mountpoint, curl and lsb_release log their arguments and change nothing outside a temporary
HOME. `sudo apt-get install python3.X` (or gcsfuse) puts that stub on PATH, as the real
install would. Nothing here needs the network, root or a TPU.
"""

import pathlib
import shutil
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "tpu" / "vm_setup.sh"
BASH = shutil.which("bash") or "/bin/bash"
# The only real programs on the script's PATH; everything else it calls is a stub.
REAL_TOOLS = ("mkdir", "cat", "rm", "cp", "chmod")

LOG_LINE = 'printf "%s\\n" "$0 $*" >> "$STUB_LOG"'

GENERIC_STUB = f"""#!{BASH}
{LOG_LINE}
"""

# Stands in for sudo: logs, reads stdin (as `sudo tee` would), never runs its command.
# `apt-get install` copies the stub of each package that has one onto PATH.
SUDO_STUB = f"""#!{BASH}
{LOG_LINE}
[ -t 0 ] || cat >/dev/null
if [ "$1" = apt-get ] && [ "$2" = install ]; then
  for pkg in "$@"; do
    if [ -f "$STUB_TEMPLATES/$pkg" ]; then cp "$STUB_TEMPLATES/$pkg" "$STUB_BIN/$pkg"; fi
  done
fi
"""

# `apt-cache show PKG` fails for the packages in $STUB_APT_MISSING.
APT_CACHE_STUB = f"""#!{BASH}
{LOG_LINE}
for missing in $STUB_APT_MISSING; do
  if [ "$2" = "$missing" ]; then exit 100; fi
done
"""

# `gcloud storage cp` fails when STUB_GCLOUD_FAIL is set.
GCLOUD_STUB = f"""#!{BASH}
{LOG_LINE}
if [ -n "$STUB_GCLOUD_FAIL" ]; then exit 1; fi
"""

MOUNTPOINT_STUB = f"""#!{BASH}
{LOG_LINE}
exit 1
"""

LSB_RELEASE_STUB = f"""#!{BASH}
{LOG_LINE}
echo jammy
"""

# python3.X: `-m venv [--clear] DIR` creates DIR/bin/python (which reports version X) and
# DIR/bin/pip, both logging stubs.
PYTHON_STUB = f"""#!{BASH}
{LOG_LINE}
version="${{0##*/python}}"
if [ "$1" = -m ] && [ "$2" = venv ]; then
  for venv in "$@"; do :; done
  mkdir -p "$venv/bin"
  printf '%s\\n' '#!{BASH}' '{LOG_LINE}' \\
    "case \\"\\$*\\" in *version_info*) echo $version;; esac" > "$venv/bin/python"
  printf '%s\\n' '#!{BASH}' '{LOG_LINE}' > "$venv/bin/pip"
  chmod +x "$venv/bin/python" "$venv/bin/pip"
fi
"""

PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13")


def _write(path, text):
  path.write_text(text)
  path.chmod(0o755)


@pytest.fixture
def sandbox(tmp_path):
  """A HOME, a PATH of stubs and real core tools, and the log the stubs write to."""
  home, bin_dir, templates = tmp_path / "home", tmp_path / "bin", tmp_path / "templates"
  for d in (home, bin_dir, templates):
    d.mkdir()
  for tool in REAL_TOOLS:
    (bin_dir / tool).symlink_to(shutil.which(tool))
  stubs = {
    "sudo": SUDO_STUB, "apt-cache": APT_CACHE_STUB, "gcloud": GCLOUD_STUB,
    "mountpoint": MOUNTPOINT_STUB, "lsb_release": LSB_RELEASE_STUB, "curl": GENERIC_STUB,
  }
  for name, text in stubs.items():
    _write(bin_dir / name, text)
  for version in PYTHON_VERSIONS:
    _write(templates / f"python{version}", PYTHON_STUB)
  _write(templates / "gcsfuse", GENERIC_STUB)
  _write(bin_dir / "gcsfuse", GENERIC_STUB)  # present unless a test removes it
  return {"tmp": tmp_path, "home": home, "bin": bin_dir, "templates": templates,
          "log": tmp_path / "commands.log"}


def run_setup(sandbox, bucket="my-bucket", **env_vars):
  """Runs vm_setup.sh in the sandbox; returns (returncode, stderr, logged commands)."""
  env = {
    "PATH": str(sandbox["bin"]), "HOME": str(sandbox["home"]), "HOSTNAME": "worker0",
    "STUB_LOG": str(sandbox["log"]), "STUB_BIN": str(sandbox["bin"]),
    "STUB_TEMPLATES": str(sandbox["templates"]), "STUB_APT_MISSING": "", "STUB_GCLOUD_FAIL": "",
  }
  env.update(env_vars)
  args = [BASH, str(SCRIPT)] + ([bucket] if bucket else [])
  proc = subprocess.run(args, env=env, cwd=sandbox["tmp"], stdin=subprocess.DEVNULL,
                        capture_output=True, text=True, timeout=60)
  log = sandbox["log"].read_text().splitlines() if sandbox["log"].exists() else []
  commands = [line.replace(str(sandbox["bin"]) + "/", "").replace(str(sandbox["home"]), "~")
              for line in log]
  return proc.returncode, proc.stderr, commands


def test_bash_syntax():
  subprocess.run([BASH, "-n", str(SCRIPT)], check=True)


def test_shellcheck():
  shellcheck = shutil.which("shellcheck")
  if shellcheck is None:
    pytest.skip("shellcheck is not installed (Debian/Ubuntu: apt-get install shellcheck)")
  proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_runs_these_commands_in_order(sandbox):
  rc, stderr, commands = run_setup(sandbox)
  assert rc == 0, stderr
  assert "command not found" not in stderr  # every outside command it calls is a stub
  assert commands == [
    "sudo apt-get update -q",
    "apt-cache show python3.11-venv",
    "sudo apt-get install -y -q python3.11 python3.11-venv",
    "python3.11 -m venv ~/venv",
    "~/venv/bin/pip install -q --upgrade pip",
    "~/venv/bin/pip install -q jax[tpu]==0.10.2 -e .[experiments]",
    "gcloud storage cp --recursive gs://my-bucket/tensorflow_datasets/cifar10 "
    "~/tensorflow_datasets/",
    "mountpoint -q ~/gcs",
    "gcsfuse --implicit-dirs --rename-dir-limit=200000 my-bucket ~/gcs",
    "~/venv/bin/python -c import jax, flax, orbax.checkpoint; "
    "print('jax', jax.__version__, 'flax', flax.__version__)",
  ]
  assert not (sandbox["home"] / "gcs" / ".vm_setup_write_probe.worker0").exists()


def test_without_the_bucket_copy_the_first_run_downloads(sandbox):
  rc, stderr, commands = run_setup(sandbox, CIFAR10_FROM_BUCKET="0")
  assert rc == 0, stderr
  assert not any(c.startswith("gcloud storage cp") for c in commands), commands
  assert "mountpoint -q ~/gcs" in commands  # The rest of the set-up still runs.
  sandbox["log"].unlink()
  rc, stderr, commands = run_setup(sandbox, CIFAR10_FROM_BUCKET="yes")
  assert rc != 0 and "CIFAR10_FROM_BUCKET must be 0 or 1" in stderr
  assert not any(c.startswith("~/venv/bin/pip") for c in commands)


@pytest.mark.parametrize("jax_version, python", [
  ("0.6.2", "3.10"), ("0.7.0", "3.11"), ("0.10.0", "3.11"), ("0.10.2", "3.11"),
  ("0.11.0", "3.12"), ("0.11.2", "3.12"), ("0.12.0.1", "3.12"),
])
def test_jax_version_picks_the_python(sandbox, jax_version, python):
  rc, stderr, commands = run_setup(sandbox, JAX_VERSION=jax_version)
  assert rc == 0, stderr
  assert f"sudo apt-get install -y -q python{python} python{python}-venv" in commands
  assert f"python{python} -m venv ~/venv" in commands
  assert f"~/venv/bin/pip install -q jax[tpu]=={jax_version} -e .[experiments]" in commands
  assert not [c for c in commands if c.startswith("python") and not c.startswith(f"python{python}")]


def test_newer_python_override_is_used(sandbox):
  rc, stderr, commands = run_setup(sandbox, JAX_VERSION="0.11.0", PYTHON_VERSION="3.13")
  assert rc == 0, stderr
  assert "python3.13 -m venv ~/venv" in commands
  assert "~/venv/bin/pip install -q jax[tpu]==0.11.0 -e .[experiments]" in commands


@pytest.mark.parametrize("jax_version, python, needed", [
  ("0.11.0", "3.11", "3.12"), ("0.12.0", "3.10", "3.12"), ("0.10.2", "3.10", "3.11"),
])
def test_mismatched_python_override_is_refused_before_anything_runs(
    sandbox, jax_version, python, needed):
  rc, stderr, commands = run_setup(sandbox, JAX_VERSION=jax_version, PYTHON_VERSION=python)
  assert rc != 0
  assert f"JAX_VERSION={jax_version} needs Python >= {needed}" in stderr
  assert f"PYTHON_VERSION={python} was given" in stderr
  assert commands == []


@pytest.mark.parametrize("env_vars, message", [
  ({"JAX_VERSION": "latest"}, "JAX_VERSION='latest' is not a release number"),
  ({"JAX_VERSION": "0.11"}, None),  # two parts are a release number too
  ({"PYTHON_VERSION": "3"}, "PYTHON_VERSION='3' is not a Python version"),
  ({"PYTHON_VERSION": "python3.12"}, "PYTHON_VERSION='python3.12' is not a Python version"),
])
def test_malformed_versions(sandbox, env_vars, message):
  rc, stderr, commands = run_setup(sandbox, **env_vars)
  if message is None:
    assert rc == 0, stderr
  else:
    assert rc != 0 and message in stderr and commands == []


def test_missing_bucket_argument_prints_usage(sandbox):
  rc, stderr, commands = run_setup(sandbox, bucket=None)
  assert rc != 0 and "usage: bash experiments/tpu/vm_setup.sh BUCKET" in stderr
  assert commands == []


def test_jax_newer_than_the_table_warns_and_uses_3_12(sandbox):
  rc, stderr, commands = run_setup(sandbox, JAX_VERSION="0.13.0")
  assert rc == 0, stderr
  assert "newer than this script's table" in stderr
  assert "python3.12 -m venv ~/venv" in commands


def test_python_missing_from_the_archive_comes_from_deadsnakes(sandbox):
  rc, stderr, commands = run_setup(
    sandbox, JAX_VERSION="0.11.0", STUB_APT_MISSING="python3.12-venv")
  assert rc == 0, stderr
  ppa = commands.index("sudo add-apt-repository -y ppa:deadsnakes/ppa")
  install = commands.index("sudo apt-get install -y -q python3.12 python3.12-venv")
  assert commands.index("apt-cache show python3.12-venv") < ppa < install
  assert commands[ppa + 1] == "sudo apt-get update -q"


def test_venv_of_another_python_is_recreated(sandbox):
  rc, stderr, _ = run_setup(sandbox)  # leaves a Python 3.11 ~/venv
  assert rc == 0, stderr
  sandbox["log"].unlink()
  rc, stderr, commands = run_setup(sandbox, JAX_VERSION="0.11.0")
  assert rc == 0, stderr
  assert "has Python 3.11; recreating it with python3.12" in stderr
  assert "python3.12 -m venv --clear ~/venv" in commands


def test_gcsfuse_is_installed_when_missing(sandbox):
  (sandbox["bin"] / "gcsfuse").unlink()
  rc, stderr, commands = run_setup(sandbox)
  assert rc == 0, stderr
  assert "sudo tee /etc/apt/sources.list.d/gcsfuse.list" in commands
  assert "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg" in commands
  assert "sudo tee /usr/share/keyrings/cloud.google.asc" in commands
  install = commands.index("sudo apt-get install -y -q gcsfuse")
  assert commands[install + 2].startswith("gcsfuse --implicit-dirs")


def test_unreadable_bucket_stops_with_a_pointer_to_permissions(sandbox):
  rc, stderr, commands = run_setup(sandbox, STUB_GCLOUD_FAIL="1")
  assert rc != 0
  assert "could not copy gs://my-bucket/tensorflow_datasets/cifar10" in stderr
  assert "Bucket permissions" in stderr
  assert not [c for c in commands if c.startswith("gcsfuse")]


def test_unwritable_mount_stops_with_a_pointer_to_permissions(sandbox):
  # A directory where the probe file should go: the write fails, even for root.
  (sandbox["home"] / "gcs" / ".vm_setup_write_probe.worker0").mkdir(parents=True)
  rc, stderr, commands = run_setup(sandbox)
  assert rc != 0
  assert "cannot write to gs://my-bucket through ~/gcs" in stderr
  assert "roles/storage.objectUser" in stderr
  assert not [c for c in commands if "import jax" in c]
