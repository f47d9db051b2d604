"""Property-based tests of max_norm over shapes, ranks, dtypes and scales."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import maxnorm_jax as mnj

pytestmark = pytest.mark.usefixtures("both_lowerings")

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@st.composite
def problems(draw):
  """A kernel, an update and a bound c, at scales that straddle c."""
  shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6))
  dtype = draw(st.sampled_from(sorted(DTYPES)))
  c = draw(st.floats(0.1, 10.0))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  fan_in = int(np.prod(shape[:-1]))
  # Params start anywhere from well inside to twice outside the ball, and the
  # updates range from negligible to much larger than c.
  param_scale = c * draw(st.floats(0.01, 2.0)) / np.sqrt(fan_in)
  update_scale = c * draw(st.sampled_from([1e-4, 1e-2, 0.3, 1.0, 10.0, 100.0])) / np.sqrt(fan_in)
  params = rng.normal(size=shape) * param_scale
  updates = rng.normal(size=shape) * update_scale
  if draw(st.booleans()):
    params[..., 0] = 0.0  # a zero neuron...
    updates[..., 0] = 0.0  # ...that stays zero
  return (jnp.asarray(params, DTYPES[dtype]), jnp.asarray(updates, DTYPES[dtype]), c)


def _bits(x):
  """The raw bits of an array, to compare floats exactly (NaN and -0 included)."""
  x = np.ascontiguousarray(x)
  return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def _norms64(x):
  x = np.asarray(x, np.float64)
  return np.sqrt((x ** 2).reshape(-1, x.shape[-1]).sum(0))


@settings(max_examples=40, deadline=None)
@given(problems())
def test_max_norm_invariants(problem):
  params, updates, c = problem
  tx = mnj.max_norm(c)
  new, _ = tx.update({"w": updates}, tx.init({"w": params}), {"w": params})
  new = new["w"]
  # bf16/fp16 leaves get float32 updates (see max_norm); apply_updates casts back.
  assert new.dtype == jnp.float32
  with jax.numpy_dtype_promotion("standard"):
    after = np.asarray(optax.apply_updates(params, new))
  assert after.dtype == params.dtype
  assert np.all(np.isfinite(after))
  # The candidate p + u as the library sees it: summed in float32.
  candidate = np.asarray(params, np.float32) + np.asarray(updates, np.float32)
  before = _norms64(candidate)
  # 1. Every neuron ends within the ball: to 1e-6 in fp32; in bf16/fp16 within
  #    the rounding of the target to the params' dtype (half an ulp), plus the
  #    float32 rounding of target - params and of the target itself.
  if params.dtype == jnp.float32:
    tol = np.full_like(before, c * 1e-6)
  else:
    half_ulp = float(jnp.finfo(params.dtype).eps) / 2
    f32 = 2.0 ** -24 * (2 * _norms64(params) + 6 * c)
    tol = c * half_ulp + f32 * (1 + half_ulp)
  assert np.all(_norms64(after) <= c + tol)
  # 2. Neurons clearly inside keep their update bit for bit (as a value: a bf16
  #    update comes back as the same number in float32).
  inside = before < c * (1 - 1e-5)
  np.testing.assert_array_equal(_bits(np.asarray(new)[..., inside].astype(updates.dtype)),
                                _bits(np.asarray(updates)[..., inside]))
  np.testing.assert_array_equal(np.asarray(new)[..., inside],
                                np.asarray(updates, np.float32)[..., inside])
  # 3. Neurons clearly outside end on the sphere.
  outside = before > c * (1 + 1e-5)
  assert np.all(np.abs(_norms64(after)[outside] - c) <= tol[outside])


@settings(max_examples=25, deadline=None)
@given(problems())
def test_projection_is_idempotent_and_a_projection(problem):
  params, updates, c = problem
  w = (params.astype(jnp.float32) + updates.astype(jnp.float32)).astype(params.dtype)
  once = mnj.project_max_norm({"w": w}, c)["w"]
  twice = mnj.project_max_norm({"w": once}, c)["w"]
  rtol = 1e-6 if w.dtype == jnp.float32 else 4 * float(jnp.finfo(w.dtype).eps)
  np.testing.assert_allclose(np.asarray(twice, np.float64), np.asarray(once, np.float64),
                             rtol=rtol, atol=0)
  # Nothing inside moves; nothing gets longer.
  assert np.all(_norms64(once) <= np.maximum(_norms64(w), 0) * (1 + rtol))
  inside = _norms64(w) <= c * (1 - 1e-5)
  np.testing.assert_array_equal(_bits(np.asarray(once)[..., inside]),
                                _bits(np.asarray(w)[..., inside]))
