"""The article's convolutional network, in Flax NNX.

``Conv(128, 3x3, VALID) -> relu`` three times, flatten, ``Dense(1024) -> relu``,
``Dense(10)`` logits (the softmax lives in the loss). Optional dropout (off in
the article) follows the last convolution and the hidden dense layer. With the default widths it
has 88,914,698 parameters, the number Keras prints for the article's model.

Keras initialises kernels with ``glorot_uniform`` and biases with zeros, while
Flax defaults to ``lecun_normal`` kernels; we initialise like Keras. Attribute
names fix the parameter paths: the big dense kernel is ``dense1/kernel``, which
is what :func:`maxnorm_jax.paths_matching` selects in the article's recipe.
"""

from __future__ import annotations

import typing

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.cifar10 import im2col
from experiments.cifar10.configs import ConvImpl

__all__ = ["CNN", "DENSE1_KERNEL", "IMAGE_SHAPE", "NUM_CLASSES", "count_params",
           "dense1_in_features", "resolve_conv_impl"]

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
# The path (`maxnorm_jax.path_to_str`) of the big Dense(1024) kernel: the article's
# constrained layer, and the one `shard_dense1` splits.
DENSE1_KERNEL = "dense1/kernel"
_CONV_LAYERS = 3  # Each VALID 3x3 convolution trims 2 pixels off each side length.


def dense1_in_features(conv_features: int) -> int:
  """Inputs of the Dense(1024) layer: the flattened last feature map, 26 * 26 * channels."""
  side = IMAGE_SHAPE[0] - 2 * _CONV_LAYERS
  return side * side * conv_features


def resolve_conv_impl(conv_impl: str) -> str:
  """``"auto"`` is ``"im2col"`` on CPU (1.6x faster there) and ``"xla"`` elsewhere."""
  impls = typing.get_args(ConvImpl)
  if conv_impl not in impls:
    raise ValueError(f"conv_impl must be one of {impls}, got {conv_impl!r}.")
  if conv_impl == "auto":
    return "im2col" if jax.default_backend() == "cpu" else "xla"
  return conv_impl


class CNN(nnx.Module):
  """Three VALID 3x3 convolutions, then two dense layers.

  Args:
    conv_features: channels of each convolution (the article: 128).
    dense_features: width of the hidden dense layer (the article: 1024).
    num_classes: number of logits.
    dtype: compute dtype (``jnp.bfloat16`` for mixed precision); parameters
      are always float32.
    dropout: dropout rate on the hidden dense layer's outputs (after its relu).
    conv_dropout: dropout rate on the last convolution's outputs (after its relu).
    conv_impl: how convolutions are computed: ``"xla"`` (XLA's native
      convolution), ``"im2col"`` (patches times a matrix, see
      :mod:`experiments.cifar10.im2col`) or ``"auto"`` (im2col on CPU only).
      Same parameters, same function to float rounding.
    rngs: the random streams used for initialisation.
  """

  def __init__(
      self,
      *,
      conv_features: int = 128,
      dense_features: int = 1024,
      num_classes: int = NUM_CLASSES,
      dtype: jnp.dtype = jnp.float32,
      dropout: float = 0.0,
      conv_dropout: float = 0.0,
      conv_impl: str = "auto",
      rngs: nnx.Rngs,
  ):
    keras_init = dict(
        kernel_init=nnx.initializers.glorot_uniform(),
        bias_init=nnx.initializers.zeros_init(),
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )
    conv = dict(kernel_size=(3, 3), padding="VALID", **keras_init)
    if resolve_conv_impl(conv_impl) == "im2col":
      conv["conv_general_dilated"] = im2col.conv_general_dilated
    self.conv1 = nnx.Conv(IMAGE_SHAPE[-1], conv_features, **conv)
    self.conv2 = nnx.Conv(conv_features, conv_features, **conv)
    self.conv3 = nnx.Conv(conv_features, conv_features, **conv)
    self.dense1 = nnx.Linear(dense1_in_features(conv_features), dense_features, **keras_init)
    self.dense2 = nnx.Linear(dense_features, num_classes, **keras_init)
    self.conv_dropout = nnx.Dropout(conv_dropout)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, images: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
    """Maps images ``[batch, 32, 32, 3]`` (floats in [0, 1]) to float32 logits.

    Dropout is applied only when ``dropout_key`` is given (training); without it
    (evaluation) the network is deterministic. The two dropout layers draw
    from independent keys folded out of ``dropout_key``.
    """
    def drop(layer: nnx.Dropout, x: jax.Array, stream: int) -> jax.Array:
      if dropout_key is None or layer.rate == 0:
        return x
      return layer(x, deterministic=False, rngs=jax.random.fold_in(dropout_key, stream))

    x = nnx.relu(self.conv1(images))
    x = nnx.relu(self.conv2(x))
    x = drop(self.conv_dropout, nnx.relu(self.conv3(x)), 0)
    x = x.reshape(x.shape[0], -1)  # Flattens in (height, width, channel) order, as Keras does.
    x = drop(self.dropout, nnx.relu(self.dense1(x)), 1)
    return self.dense2(x).astype(jnp.float32)


def count_params(params) -> int:
  """Number of scalars in a parameter pytree."""
  return sum(x.size for x in jax.tree.leaves(params))
