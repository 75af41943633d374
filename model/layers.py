"""The layers 3D-R2N2 needs that Keras does not ship.

A 3D convolutional GRU (and the LSTM variant) whose hidden state is a grid,
the thin `keras.layers.RNN` subclass that runs such a cell over views, the
zero-insertion unpooling of the original decoder and its exact low-cost form
(`UnpoolConv3D`), and the small glue layers of the network. Everything here is
registered for Keras serialization and must round-trip through `get_config`;
nothing here may know about files, images or Ray.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

PACKAGE = "voxray"


def _grid_conv(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """3D "same" cross-correlation, stride 1, channels last (as tf.nn.conv3d)."""
    return tf.nn.conv3d(x, kernel, strides=[1, 1, 1, 1, 1], padding="SAME")


class _GridCell(keras.layers.Layer):
    """Shared weights and plumbing of the two grid cells.

    Every gate is `FC(x) reshaped to the grid + conv3d(h) + per-channel bias`.
    The weights are, in this order: `fc_kernel (features, 3 * grid^3 * filters)`,
    `conv_kernel (k, k, k, filters, 3 * filters)`, `bias (3 * filters,)`. Gates
    are gate-major in both kernels; within a gate the FC columns are the grid in
    channels-last (d, h, w, c) C order.
    """

    n_states = 1

    def __init__(
        self,
        filters: int,
        grid: int,
        kernel_size: int = 3,
        fc_initializer="glorot_uniform",
        conv_initializer="glorot_uniform",
        bias_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.filters = int(filters)
        self.grid = int(grid)
        self.kernel_size = int(kernel_size)
        self.fc_initializer = keras.initializers.get(fc_initializer)
        self.conv_initializer = keras.initializers.get(conv_initializer)
        # The original code initialises every gate bias to 0.1.
        self.bias_initializer = keras.initializers.get(
            bias_initializer if bias_initializer is not None else keras.initializers.Constant(0.1)
        )
        cells = self.grid**3 * self.filters
        # Keras' RNN only understands integer sizes; ConvRNN3D reports the grid
        # shape itself, these integers only say how many numbers a state holds.
        self.state_size = [cells] * self.n_states
        self.output_size = cells

    @property
    def grid_shape(self) -> tuple[int, int, int, int]:
        return (self.grid, self.grid, self.grid, self.filters)

    def build(self, input_shape):
        features = input_shape[-1]
        k = self.kernel_size
        self.fc_kernel = self.add_weight(
            shape=(features, 3 * self.grid**3 * self.filters),
            initializer=self.fc_initializer,
            name="fc_kernel",
        )
        self.conv_kernel = self.add_weight(
            shape=(k, k, k, self.filters, 3 * self.filters),
            initializer=self.conv_initializer,
            name="conv_kernel",
        )
        self.bias = self.add_weight(
            shape=(3 * self.filters,), initializer=self.bias_initializer, name="bias"
        )

    def _input_gates(self, x):
        """FC(x) for the three gates, each `[batch, grid, grid, grid, filters]`."""
        g = self.grid
        fc = ops.reshape(ops.matmul(x, self.fc_kernel), (-1, 3, g, g, g, self.filters))
        return fc[:, 0], fc[:, 1], fc[:, 2]

    def get_initial_state(self, batch_size=None):
        zeros = ops.zeros((batch_size, *self.grid_shape), dtype=self.compute_dtype)
        return [zeros] * self.n_states

    def compute_output_shape(self, input_shape, states_shape=None):
        return (input_shape[0], *self.grid_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "grid": self.grid,
            "kernel_size": self.kernel_size,
            "fc_initializer": keras.initializers.serialize(self.fc_initializer),
            "conv_initializer": keras.initializers.serialize(self.conv_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvGRU3DCell(_GridCell):
    """The 3D convolutional GRU cell of 3D-R2N2.

    The hidden state is a `[grid, grid, grid, filters]` grid. The input is a
    feature vector that a fully connected map spreads over the grid; the state
    talks to itself through 3D convolutions:

        u  = sigmoid(Wu x + Uu * h + bu)                 (update gate)
        r  = sigmoid(Wr x + Ur * h + br)                 (reset gate)
        h' = u . h + (1 - u) . tanh(Wh x + Uh * (r . h) + bh)

    `W. x` is the FC map reshaped to the grid (no FC bias), `U. *` a k^3 "same"
    cross-correlation (no conv bias), `b.` a per-channel bias initialised to 0.1
    and `.` the elementwise product.

    Args:
        filters: channels of the hidden grid (128 in the paper).
        grid: side of the hidden grid (4 in the paper).
        kernel_size: side of the recurrent 3D kernel (3 in the paper).
        fc_initializer, conv_initializer, bias_initializer: initialisers of the
            three weights; the bias defaults to the constant 0.1.

    Call arguments:
        inputs: `[batch, features]`, one view's features.
        states: `[h_tm1]`, each `[batch, grid, grid, grid, filters]`.

    Weights:
        `fc_kernel (features, 3 * grid^3 * filters)`,
        `conv_kernel (k, k, k, filters, 3 * filters)`, `bias (3 * filters,)`;
        gate order update, reset, candidate.

    Example:
        >>> cell = ConvGRU3DCell(filters=128, grid=4)
        >>> h = ConvRNN3D(cell)(keras.ops.ones((2, 5, 1024)))   # (2, 4, 4, 4, 128)

    References:
        Choy et al., "3D-R2N2: A Unified Approach for Single and Multi-view 3D
        Object Reconstruction", ECCV 2016, section 3.2.
    """

    n_states = 1

    def call(self, inputs, states, training=False):
        h_tm1 = states[0]
        f = self.filters
        x_z, x_r, x_h = self._input_gates(inputs)
        h_zr = _grid_conv(h_tm1, self.conv_kernel[..., : 2 * f])
        z = ops.sigmoid(x_z + h_zr[..., :f] + self.bias[:f])
        r = ops.sigmoid(x_r + h_zr[..., f:] + self.bias[f : 2 * f])
        hh = ops.tanh(
            x_h + _grid_conv(r * h_tm1, self.conv_kernel[..., 2 * f :]) + self.bias[2 * f :]
        )
        h = z * h_tm1 + (1.0 - z) * hh
        return h, [h]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvLSTM3DCell(_GridCell):
    """The 3D convolutional LSTM cell of 3D-R2N2 (no output gate).

        i  = sigmoid(Wi x + Ui * h + bi)                 (input gate)
        f  = sigmoid(Wf x + Uf * h + bf)                 (forget gate)
        c' = f . c + i . tanh(Wc x + Uc * h + bc)
        h' = tanh(c')

    Notation, arguments and weight layout as `ConvGRU3DCell`, with gate order
    input, forget, candidate. The states are `[h_tm1, c_tm1]`.

    Example:
        >>> h = ConvRNN3D(ConvLSTM3DCell(128, 4))(keras.ops.ones((2, 5, 1024)))

    References:
        Choy et al., ECCV 2016, section 3.2 (3D Convolutional LSTM).
    """

    n_states = 2

    def call(self, inputs, states, training=False):
        h_tm1, c_tm1 = states
        f = self.filters
        x_i, x_f, x_c = self._input_gates(inputs)
        h_all = _grid_conv(h_tm1, self.conv_kernel)
        i = ops.sigmoid(x_i + h_all[..., :f] + self.bias[:f])
        fg = ops.sigmoid(x_f + h_all[..., f : 2 * f] + self.bias[f : 2 * f])
        c = fg * c_tm1 + i * ops.tanh(x_c + h_all[..., 2 * f :] + self.bias[2 * f :])
        h = ops.tanh(c)
        return h, [h, c]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvRNN3D(keras.layers.RNN):
    """Runs a grid cell over a sequence of view features; returns the final grid.

    Args:
        cell: a `ConvGRU3DCell` or `ConvLSTM3DCell` (or its config).

    Call arguments:
        sequences: `[batch, time, features]`.
        mask: optional boolean `[batch, time]`; a masked step leaves every
            state unchanged, so padding views at the end changes nothing.

    Output shape:
        `[batch, grid, grid, grid, filters]`, the hidden grid after the last
        unmasked step (zeros for an object whose every step is masked).
    """

    def __init__(self, cell, **kwargs):
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        for fixed in ("return_sequences", "return_state", "go_backwards", "stateful"):
            kwargs.pop(fixed, None)
        super().__init__(cell, **kwargs)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        return (sequences_shape[0], *self.cell.grid_shape)

    def compute_mask(self, _, mask):
        return None

    def get_config(self):
        config = super().get_config()
        config["cell"] = keras.saving.serialize_keras_object(self.cell)
        for fixed in ("return_sequences", "return_state", "go_backwards", "stateful"):
            config.pop(fixed, None)
        return config


def unpool_conv3d(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """Zero-insertion unpooling (x2) followed by a k^3 "same" cross-correlation,
    computed as a stride-2 transposed convolution with the flipped kernel.

    With `u[2i] = x[i]` (zeros at odd positions) and `y[o] = sum_m w[m] u[o + m - p]`
    (p = (k - 1) / 2), `y` equals the transposed convolution of `x` with
    `w'[m] = w[k - 1 - m]`, "valid", taken from output index `p` on. The
    transposed form never multiplies the inserted zeros: 1/8 of the FLOPs.

    Args:
        x: `[batch, n, n, n, c_in]`.
        kernel: `[k, k, k, c_in, c_out]`, the literal convolution's kernel.

    Returns:
        `[batch, 2n, 2n, 2n, c_out]`, without bias.
    """
    k = kernel.shape[0]
    p = (k - 1) // 2
    n = tf.shape(x)[1:4]
    # Transposed convolution kernels are [k, k, k, c_out, c_in].
    flipped = tf.transpose(tf.reverse(kernel, axis=[0, 1, 2]), [0, 1, 2, 4, 3])
    # The longest output that stride 2 "valid" allows is 2n + k - 1 = 2n + 2p;
    # the result is its window [p, p + 2n) on every axis.
    full = 2 * n + 2 * p
    out_shape = tf.concat([tf.shape(x)[:1], full, tf.shape(kernel)[4:]], axis=0)
    y = tf.nn.conv3d_transpose(x, flipped, out_shape, strides=[1, 2, 2, 2, 1], padding="VALID")
    return y[:, p : p + 2 * n[0], p : p + 2 * n[1], p : p + 2 * n[2], :]


@keras.saving.register_keras_serializable(package=PACKAGE)
class Unpool3D(keras.layers.Layer):
    """Zero-insertion unpooling by 2 on the three spatial axes: inputs land on
    even positions, zeros elsewhere (the original decoder; not nearest neighbour).

    Input shape: `[batch, n, n, n, c]`. Output shape: `[batch, 2n, 2n, 2n, c]`.
    """

    def call(self, x):
        # One axis at a time: interleave with zeros along a new axis, merge.
        for axis in (1, 2, 3):
            x = ops.stack([x, ops.zeros_like(x)], axis=axis + 1)
            shape = ops.shape(x)
            merged = [shape[i] for i in range(axis)] + [2 * shape[axis]]
            x = ops.reshape(x, (*merged, *[shape[i] for i in range(axis + 2, 6)]))
        return x

    def compute_output_shape(self, input_shape):
        b, d, h, w, c = input_shape
        return (b, *(None if s is None else 2 * s for s in (d, h, w)), c)


@keras.saving.register_keras_serializable(package=PACKAGE)
class UnpoolConv3D(keras.layers.Layer):
    """`Unpool3D` followed by a k^3 "same" `Conv3D`, at 1/8 of the conv's FLOPs.

    Holds its weights exactly as the literal `Conv3D` would (`kernel
    (k, k, k, c_in, filters)`, `bias (filters,)`), so weights of the original
    network load unchanged; the bias is added everywhere, zeros included, as
    the literal layer does.

    Args:
        filters: output channels.
        kernel_size: odd kernel side (3 for the decoder convs, 1 for shortcuts).

    Input shape: `[batch, n, n, n, c_in]`. Output shape: `[batch, 2n, 2n, 2n, filters]`.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(
            shape=(k, k, k, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.filters,), initializer=self.bias_initializer, name="bias"
        )

    def call(self, x):
        return unpool_conv3d(x, self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        b, d, h, w, _ = input_shape
        return (b, *(None if s is None else 2 * s for s in (d, h, w)), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatherViews(keras.layers.Layer):
    """Turns packed per-view features into padded per-object sequences.

    The encoder runs on real views only, packed `[n_views, features]`; an
    index `[batch, time]` says which packed row is each object's t-th view, -1
    where an object has fewer views than `time`.

    Call arguments:
        features: `[n_views, features]`.
        view_index: int `[batch, time]`.

    Returns:
        `(sequences [batch, time, features], mask [batch, time])`, with zeros
        at padded steps.
    """

    def call(self, features, view_index):
        mask = ops.greater_equal(view_index, 0)
        seq = ops.take(features, ops.maximum(view_index, 0), axis=0)
        seq = seq * ops.cast(mask, seq.dtype)[..., None]
        return seq, mask

    def compute_output_shape(self, features_shape, view_index_shape):
        return (*view_index_shape, features_shape[-1]), tuple(view_index_shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Occupancy(keras.layers.Layer):
    """Two-class softmax over the last axis; returns p(occupied) (channel 1).

    Input shape: `[..., 2]` logits. Output shape: `[...]`.
    """

    def call(self, logits):
        return ops.softmax(ops.cast(logits, "float32"), axis=-1)[..., 1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])
