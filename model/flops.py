"""FLOPs of a voxray model, counted from its traced TensorFlow graph.

Counts multiply-adds as 2 FLOPs in the ops that carry the arithmetic
(convolutions, transposed convolutions, matrix products); elementwise ops are
left out, as is usual. The recurrence is traced unrolled so that every step's
ops appear in the graph. Static shapes are required: one trace per
(objects, views) pair.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def _unrolled(model: keras.Model) -> keras.Model:
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"].endswith("ConvRNN3D"):
            layer["config"]["unroll"] = True
    return model.__class__.from_config(config)


COUNTED = ("Conv2D", "Conv3D", "Conv3DBackpropInputV2", "MatMul", "BatchMatMulV2", "BatchMatMulV3")


def _op_flops(op: tf.Operation) -> int:
    t = op.type
    if t in ("Conv2D", "Conv3D"):
        out = op.outputs[0].shape
        kernel = op.inputs[1].shape  # [k.., c_in, c_out]
        return 2 * math.prod(out) * math.prod(kernel[:-1])
    if t == "Conv3DBackpropInputV2":
        kernel = op.inputs[1].shape  # [k, k, k, c_out, c_in]
        x = op.inputs[2].shape  # the transposed conv's input [b, n, n, n, c_in]
        return 2 * math.prod(x) * math.prod(kernel[:-1])
    if t in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a, out = op.inputs[0].shape, op.outputs[0].shape
        transpose_a = op.get_attr("transpose_a") if t == "MatMul" else op.get_attr("adj_x")
        k = a[-2] if transpose_a else a[-1]
        return 2 * math.prod(out) * k
    return 0


def count_flops(model: keras.Model, objects: int, views: int) -> int:
    """FLOPs of one forward pass on `objects` objects with `views` views each."""
    s = model.input["views"].shape[1]
    flat = _unrolled(model)
    spec = {
        "views": tf.TensorSpec([objects * views, s, s, 3], tf.float32),
        "view_index": tf.TensorSpec([objects, views], tf.int32),
    }
    graph = (
        tf.function(lambda inputs: flat(inputs, training=False)).get_concrete_function(spec).graph
    )
    total = 0
    for op in graph.get_operations():
        if any(d is None for o in list(op.inputs) + list(op.outputs) for d in (o.shape or [])):
            if op.type in COUNTED:
                raise ValueError(f"op {op.name} has a dynamic shape; cannot count its FLOPs")
            continue
        total += _op_flops(op)
    return total
