#!/usr/bin/env bash
# Prepares one Cloud TPU VM worker to run `python -m experiments.cifar10` (see TPU_SETUP.md).
# Run it from the project's root on every worker:
#
#   bash experiments/tpu/vm_setup.sh BUCKET
#
# Optional environment:
#   JAX_VERSION     the jax[tpu] release to install; default 0.10.2, the version the tests ran
#                   with (on CPU). It decides the Python version, from the Requires-Python of
#                   the jax releases on PyPI: 0.4.x-0.6.x need >= 3.10, 0.7-0.10 need >= 3.11,
#                   0.11-0.12 need >= 3.12. The script uses that minimum.
#   PYTHON_VERSION  e.g. 3.13: use this interpreter instead. One older than JAX_VERSION needs
#                   is refused before anything is installed.
#   CIFAR10_FROM_BUCKET  1 (default): step 2 copies the prepared CIFAR-10 from the bucket.
#                   0: skip step 2; each worker's first run then downloads and verifies the
#                   canonical archive itself (see TPU_SETUP.md, step 0).
#
# 1. ~/venv: that Python (from the image's apt archive, or the deadsnakes PPA when the archive
#    lacks it, as Ubuntu 22.04 is thought to lack 3.12), jax[tpu] and this project with its
#    experiments extras. No TensorFlow: tfds reads the prepared data without it, and a full
#    TensorFlow would try to take the TPU. An existing ~/venv of another Python is recreated.
# 2. CIFAR-10 (the tfds-built copy, about 180 MB) from gs://BUCKET/tensorflow_datasets/cifar10
#    to ~/tensorflow_datasets on this worker (unless CIFAR10_FROM_BUCKET=0). This needs read
#    access to the bucket.
# 3. The bucket mounted at ~/gcs with gcsfuse, so that every worker sees the same workdir
#    (multi-host Orbax checkpoints need one directory that all hosts write to), then a write
#    probe: checkpoints need write access, and without it a run would fail only at its first
#    checkpoint.
#
# tests/test_tpu_vm_setup.py runs this script with every outside command stubbed. It has not
# run on a TPU VM.
set -euo pipefail

die() {
  echo "vm_setup.sh: error: $*" >&2
  exit 2
}

BUCKET="${1:?usage: bash experiments/tpu/vm_setup.sh BUCKET   (a GCS bucket name, without gs://)}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
CIFAR10_FROM_BUCKET="${CIFAR10_FROM_BUCKET:-1}"
[[ "$CIFAR10_FROM_BUCKET" =~ ^[01]$ ]] \
  || die "CIFAR10_FROM_BUCKET must be 0 or 1, got '${CIFAR10_FROM_BUCKET}'."

# --- Which Python this JAX needs. Checked before anything is installed. ---
version_re='^[0-9]+\.[0-9]+(\.[0-9]+)*$'
[[ $JAX_VERSION =~ $version_re ]] \
  || die "JAX_VERSION='${JAX_VERSION}' is not a release number such as 0.10.2"
IFS=. read -r jax_major jax_minor _ <<<"$JAX_VERSION"
jax_major=$((10#$jax_major))
jax_minor=$((10#$jax_minor))
if ((jax_major == 0 && jax_minor <= 6)); then
  min_python_minor=10
elif ((jax_major == 0 && jax_minor <= 10)); then
  min_python_minor=11
elif ((jax_major == 0 && jax_minor <= 12)); then
  min_python_minor=12
else
  min_python_minor=12
  echo "vm_setup.sh: warning: JAX ${JAX_VERSION} is newer than this script's table; assuming" \
    "it needs Python >= 3.12. If pip says it requires a different Python, set PYTHON_VERSION." >&2
fi

if [[ -n ${PYTHON_VERSION:-} ]]; then
  [[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] \
    || die "PYTHON_VERSION='${PYTHON_VERSION}' is not a Python version such as 3.12"
  if ((10#${PYTHON_VERSION#3.} < min_python_minor)); then
    die "JAX_VERSION=${JAX_VERSION} needs Python >= 3.${min_python_minor}, but" \
      "PYTHON_VERSION=${PYTHON_VERSION} was given. Unset PYTHON_VERSION to get" \
      "python3.${min_python_minor}, or set it to 3.${min_python_minor} or newer."
  fi
else
  PYTHON_VERSION="3.${min_python_minor}"
fi
PYTHON="python${PYTHON_VERSION}"
VENV="$HOME/venv"
echo "vm_setup.sh: jax[tpu]==${JAX_VERSION} (needs Python >= 3.${min_python_minor}) in ${VENV}" \
  "with ${PYTHON}"

# --- 1. Python, the virtual environment, JAX and this project. ---
sudo apt-get update -q
if ! apt-cache show "${PYTHON}-venv" >/dev/null 2>&1; then
  sudo apt-get install -y -q software-properties-common
  sudo add-apt-repository -y ppa:deadsnakes/ppa
  sudo apt-get update -q
fi
sudo apt-get install -y -q "${PYTHON}" "${PYTHON}-venv"

if [[ -x "$VENV/bin/python" ]]; then
  venv_python="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [[ $venv_python != "$PYTHON_VERSION" ]]; then
    echo "vm_setup.sh: ${VENV} has Python ${venv_python}; recreating it with ${PYTHON}" >&2
    "${PYTHON}" -m venv --clear "$VENV"
  else
    "${PYTHON}" -m venv "$VENV"
  fi
else
  "${PYTHON}" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "jax[tpu]==${JAX_VERSION}" -e ".[experiments]"

# --- 2. CIFAR-10 from the bucket (read access). ---
case "$CIFAR10_FROM_BUCKET" in
  1)
    mkdir -p ~/tensorflow_datasets
    gcloud storage cp --recursive "gs://${BUCKET}/tensorflow_datasets/cifar10" \
      ~/tensorflow_datasets/ \
      || die "could not copy gs://${BUCKET}/tensorflow_datasets/cifar10. Check that it exists" \
        "and that this VM's service account may read the bucket (see 'Bucket permissions' in" \
        "TPU_SETUP.md; 'gcloud auth list' shows the account), or set CIFAR10_FROM_BUCKET=0" \
        "to let the first run download the canonical archive instead."
    ;;
  *) echo "CIFAR10_FROM_BUCKET=0: no copy from the bucket; the first run downloads CIFAR-10." ;;
esac

# --- 3. The bucket at ~/gcs (write access). ---
if ! command -v gcsfuse >/dev/null; then  # Google's apt repository; see TPU_SETUP.md (sources).
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" \
    | sudo tee /etc/apt/sources.list.d/gcsfuse.list
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
  sudo apt-get update -q
  sudo apt-get install -y -q gcsfuse
fi
mkdir -p ~/gcs
# Orbax finishes a checkpoint by renaming its temporary directory; gcsfuse renames
# directories only up to --rename-dir-limit objects.
mountpoint -q ~/gcs || gcsfuse --implicit-dirs --rename-dir-limit=200000 "${BUCKET}" ~/gcs

probe="$HOME/gcs/.vm_setup_write_probe.${HOSTNAME:-worker}"
{ echo ok >"$probe" && rm -f "$probe"; } 2>/dev/null \
  || die "cannot write to gs://${BUCKET} through ~/gcs: checkpoints would fail. This VM's" \
    "service account needs roles/storage.objectUser on the bucket (see 'Bucket permissions'" \
    "in TPU_SETUP.md)."

"$VENV/bin/python" -c "import jax, flax, orbax.checkpoint; print('jax', jax.__version__, 'flax', flax.__version__)"
