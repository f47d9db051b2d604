#!/usr/bin/env bash
# Prepares one Cloud TPU VM worker to run `python -m experiments.cifar10` (see TPU_SETUP.md).
# Run it from the project's root on every worker:
#
#   bash experiments/tpu/vm_setup.sh BUCKET
#
# 1. ~/venv: Python 3.11 (JAX 0.10 needs >= 3.11; Ubuntu 22.04 images ship 3.10),
#    jax[tpu] and this project with its experiments extras. No TensorFlow: tfds reads
#    the prepared data without it, and a full TensorFlow would try to take the TPU.
# 2. CIFAR-10 (the tfds-built copy, about 180 MB) from gs://BUCKET/tensorflow_datasets/cifar10
#    to ~/tensorflow_datasets on this worker.
# 3. The bucket mounted at ~/gcs with gcsfuse, so that every worker sees the same workdir
#    (multi-host Orbax checkpoints need one directory that all hosts write to).
#
# Untested here: this project's development machine has no TPU and no network.
set -euo pipefail

BUCKET="${1:?usage: bash experiments/tpu/vm_setup.sh BUCKET   (a GCS bucket name, without gs://)}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"  # The version the tests ran with (on CPU).

sudo apt-get update -q
sudo apt-get install -y -q python3.11 python3.11-venv
python3.11 -m venv ~/venv
~/venv/bin/pip install -q --upgrade pip
~/venv/bin/pip install -q "jax[tpu]==${JAX_VERSION}" -e ".[experiments]"

mkdir -p ~/tensorflow_datasets
gcloud storage cp --recursive "gs://${BUCKET}/tensorflow_datasets/cifar10" ~/tensorflow_datasets/

if ! command -v gcsfuse >/dev/null; then  # Google's apt repository, as gcsfuse's docs give it.
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

~/venv/bin/python -c "import jax, flax, orbax.checkpoint; print('jax', jax.__version__, 'flax', flax.__version__)"
