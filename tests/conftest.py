"""Test-wide set-up: several simulated CPU devices and Keras on JAX.

Both must be set before JAX or Keras is imported, so they live here, the first
file pytest loads.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
