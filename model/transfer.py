"""Start a network from another one's weights (warm start).

Layers are matched by name. A layer whose weights have the same shapes gets
them as they are. Two changes of shape are carried over:

- **Another input size.** The one layer whose shape follows the input size,
  the first Dense after the encoder's Flatten (`fc7`), gets its kernel
  resampled when the encoder's last feature map changes size: the kernel is
  viewed as a [h, w, channels, units] map over the feature map's positions,
  resized bilinearly to the new [h', w'] and scaled by (h * w) / (h' * w'): a
  kernel that weighs every position alike keeps its output for a feature map
  that is alike at every position, and in general each position keeps about
  the weight its part of the image had. A starting point for fine-tuning at
  the new size, not an equivalent network.
- **Wider layers** (Conv2D, Conv3D, Dense; `fc7` by its feature map's
  channels): the source's kernel and bias fill the leading input and output
  channels; the new output channels keep their fresh initialisation, and the
  weights from new input channels are zero. Every new channel is then
  computed but read by nothing, so the wider network computes exactly what the
  source did, and training grows the new channels from there.

Anything else that does not fit is an error, never silently skipped.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _flatten_input_grid(layer: keras.layers.Layer) -> tuple[int, int, int] | None:
    """(h, w, channels) of the map flattened into `layer`, a Dense fed by a
    Flatten; None for any other layer."""
    if not isinstance(layer, keras.layers.Dense):
        return None
    flatten = layer.input._keras_history.operation
    if not isinstance(flatten, keras.layers.Flatten):
        return None
    shape = flatten.input.shape
    if len(shape) != 4:
        raise ValueError(f"{layer.name} flattens a {len(shape) - 1}-D map; expected a 2D one")
    return int(shape[1]), int(shape[2]), int(shape[3])


def resample_dense_kernel(kernel: np.ndarray, grid: tuple[int, int, int], new_hw: tuple[int, int]):
    """`kernel` [h*w*c, units] over a flattened (h, w, c) map, for an (h', w', c) map."""
    h, w, c = grid
    units = kernel.shape[1]
    if kernel.shape[0] != h * w * c:
        raise ValueError(f"kernel rows {kernel.shape[0]} != {h}*{w}*{c}")
    spatial = kernel.reshape(1, h, w, c * units)
    resized = tf.image.resize(spatial, new_hw, method="bilinear").numpy()
    scale = (h * w) / (new_hw[0] * new_hw[1])
    return (resized * scale).reshape(new_hw[0] * new_hw[1] * c, units).astype(kernel.dtype)


def transfer_weights(source: keras.Model, target: keras.Model) -> dict[str, str]:
    """Copy `source`'s weights into `target`, layer by layer by name.

    Returns {layer name: "copied" | "resampled" | "widened"} for every layer
    with weights.
    Raises ValueError when a target layer has no source layer of that name, or
    its weights do not fit and cannot be resampled.
    """
    report = {}
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"the source model has no layer {layer.name!r}") from None
        kinds = [
            type(x).__name__ + (f"({type(x.cell).__name__})" if hasattr(x, "cell") else "")
            for x in (src, layer)
        ]
        if kinds[0] != kinds[1]:
            raise ValueError(
                f"layer {layer.name!r} is a {kinds[0]} in the source, a {kinds[1]} here"
            )
        src_w, dst_w = src.get_weights(), layer.get_weights()
        if [w.shape for w in src_w] == [w.shape for w in dst_w]:
            layer.set_weights(src_w)
            report[layer.name] = "copied"
            continue
        misfit = ValueError(
            f"layer {layer.name!r}: source shapes {[w.shape for w in src_w]} do not fit "
            f"{[w.shape for w in dst_w]}"
        )
        old, new = _flatten_input_grid(src), _flatten_input_grid(layer)
        flattened = old is not None and new is not None
        if flattened:
            if old[:2] != new[:2]:
                if old[2] != new[2] or src_w[0].shape[1] != dst_w[0].shape[1]:
                    raise ValueError(
                        f"layer {layer.name!r}: the map's size and its channels or the units "
                        f"changed together ({old} -> {new}); change one at a time"
                    )
                layer.set_weights([resample_dense_kernel(src_w[0], old, new[:2]), *src_w[1:]])
                report[layer.name] = "resampled"
                continue
            # as a [h, w, c, units] kernel, widening c and units
            src_w = [src_w[0].reshape(*old, -1), *src_w[1:]]
            dst_w = [dst_w[0].reshape(*new, -1), *dst_w[1:]]
        elif not isinstance(layer, keras.layers.Conv2D | keras.layers.Conv3D | keras.layers.Dense):
            raise misfit
        widened = [_widen(a, b) for a, b in zip(src_w, dst_w, strict=True)]
        if any(w is None for w in widened):
            raise misfit
        if flattened:
            widened[0] = widened[0].reshape(-1, widened[0].shape[-1])
        layer.set_weights(widened)
        report[layer.name] = "widened"
    return report


def _widen(source: np.ndarray, fresh: np.ndarray) -> np.ndarray | None:
    """`source` in the leading channels of `fresh`'s shape (a kernel [..., in,
    out] or a bias [out]): new outputs keep `fresh`, new inputs get zero.
    None when the shapes are not a widening (other rank, other spatial size,
    fewer channels)."""
    if source.ndim != fresh.ndim:
        return None
    channel_dims = 1 if source.ndim == 1 else 2
    spatial = source.ndim - channel_dims
    if source.shape[:spatial] != fresh.shape[:spatial] or any(
        a > b for a, b in zip(source.shape, fresh.shape, strict=True)
    ):
        return None
    out = fresh.copy()
    if source.ndim > 1:
        out[..., source.shape[-2] :, :] = 0  # weights from new input channels
    out[tuple(slice(0, n) for n in source.shape)] = source
    return out
