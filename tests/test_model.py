"""The network: cells against an independent numpy implementation, masking,
the unpool-conv equivalence, presets, save/load, gradients and the
Reconstructor."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from model import Reconstructor, build, load_model, model_id, save_model  # noqa: E402
from model.flops import count_flops  # noqa: E402
from model.layers import (  # noqa: E402
    ConvGRU3DCell,
    ConvLSTM3DCell,
    ConvRNN3D,
    Unpool3D,
    UnpoolConv3D,
)

# ---------------------------------------------------------------- numpy reference


def np_conv3d_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Cross-correlation, stride 1, zero 'same' padding. x [b,d,h,w,ci], w [k,k,k,ci,co]."""
    k = w.shape[0]
    p = k // 2
    xp = np.pad(x, [(0, 0), (p, p), (p, p), (p, p), (0, 0)])
    d, h, wd = x.shape[1:4]
    out = np.zeros(x.shape[:4] + (w.shape[-1],), np.float64)
    for i in range(k):
        for j in range(k):
            for m in range(k):
                patch = xp[:, i : i + d, j : j + h, m : m + wd, :]
                out += np.einsum("bdhwc,co->bdhwo", patch, w[i, j, m])
    return out


def np_unpool(x: np.ndarray) -> np.ndarray:
    b, d, h, w, c = x.shape
    out = np.zeros((b, 2 * d, 2 * h, 2 * w, c), x.dtype)
    out[:, ::2, ::2, ::2] = x
    return out


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_gates(x, h, fc, conv, bias, grid, filters):
    """FC part of the three gates, [b, 3, g, g, g, f], in the contract layout."""
    return (x @ fc).reshape(-1, 3, grid, grid, grid, filters)


def np_gru_step(x, h, fc, conv, bias, grid, filters):
    f = filters
    g = np_gates(x, h, fc, conv, bias, grid, filters)
    u = sigmoid(g[:, 0] + np_conv3d_same(h, conv[..., :f]) + bias[:f])
    r = sigmoid(g[:, 1] + np_conv3d_same(h, conv[..., f : 2 * f]) + bias[f : 2 * f])
    hh = np.tanh(g[:, 2] + np_conv3d_same(r * h, conv[..., 2 * f :]) + bias[2 * f :])
    return u * h + (1 - u) * hh


def np_lstm_step(x, h, c, fc, conv, bias, grid, filters):
    f = filters
    g = np_gates(x, h, fc, conv, bias, grid, filters)
    i = sigmoid(g[:, 0] + np_conv3d_same(h, conv[..., :f]) + bias[:f])
    fg = sigmoid(g[:, 1] + np_conv3d_same(h, conv[..., f : 2 * f]) + bias[f : 2 * f])
    c = fg * c + i * np.tanh(g[:, 2] + np_conv3d_same(h, conv[..., 2 * f :]) + bias[2 * f :])
    return np.tanh(c), c


def np_run(kind, seq, mask, weights, grid, filters):
    """Run the recurrence in numpy; masked steps keep every state."""
    fc, conv, bias = weights
    b, t, _ = seq.shape
    h = np.zeros((b, grid, grid, grid, filters))
    c = np.zeros_like(h)
    for step in range(t):
        keep = ~mask[:, step][:, None, None, None, None]
        if kind == "gru":
            h_new, c_new = np_gru_step(seq[:, step], h, fc, conv, bias, grid, filters), c
        else:
            h_new, c_new = np_lstm_step(seq[:, step], h, c, fc, conv, bias, grid, filters)
        h = np.where(keep, h, h_new)
        c = np.where(keep, c, c_new)
    return h


# ---------------------------------------------------------------- cells

GRID, FILTERS, FEATURES = 4, 3, 5


def random_weights(cell, rng):
    fc = rng.normal(0, 0.3, (FEATURES, 3 * GRID**3 * FILTERS))
    conv = rng.normal(0, 0.3, (3, 3, 3, FILTERS, 3 * FILTERS))
    bias = rng.normal(0, 0.3, (3 * FILTERS,))
    cell.set_weights([fc, conv, bias])
    return fc, conv, bias


@pytest.mark.parametrize("kind,cls", [("gru", ConvGRU3DCell), ("lstm", ConvLSTM3DCell)])
def test_cell_matches_numpy_with_mask(kind, cls):
    rng = np.random.default_rng(0)
    cell = cls(FILTERS, GRID)
    rnn = ConvRNN3D(cell)
    seq = rng.normal(size=(3, 4, FEATURES)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0]], bool)
    rnn(seq)  # build
    weights = random_weights(cell, rng)
    got = keras.ops.convert_to_numpy(rnn(seq, mask=mask))
    want = np_run(kind, seq.astype(np.float64), mask, weights, GRID, FILTERS)
    assert got.shape == (3, GRID, GRID, GRID, FILTERS)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("cls", [ConvGRU3DCell, ConvLSTM3DCell])
def test_weight_layout_contract(cls):
    cell = cls(128, 4)
    ConvRNN3D(cell)(np.zeros((1, 2, 1024), np.float32))
    names = [w.name for w in cell.weights]
    shapes = [tuple(w.shape) for w in cell.weights]
    assert names == ["fc_kernel", "conv_kernel", "bias"]
    assert shapes == [(1024, 3 * 4**3 * 128), (3, 3, 3, 128, 384), (384,)]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(cell.bias), 0.1)


@pytest.mark.parametrize("cls", [ConvGRU3DCell, ConvLSTM3DCell])
def test_masked_padding_equals_unpadded(cls):
    rng = np.random.default_rng(1)
    rnn = ConvRNN3D(cls(FILTERS, GRID))
    seq = rng.normal(size=(1, 3, FEATURES)).astype(np.float32)
    padded = np.concatenate([seq, rng.normal(size=(1, 2, FEATURES)).astype(np.float32)], 1)
    mask = np.array([[True, True, True, False, False]])
    a = keras.ops.convert_to_numpy(rnn(seq))
    b = keras.ops.convert_to_numpy(rnn(padded, mask=mask))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", [ConvGRU3DCell, ConvLSTM3DCell])
def test_config_round_trip(cls):
    rnn = ConvRNN3D(cls(FILTERS, GRID, kernel_size=3, name="cell"), name="rnn")
    clone = ConvRNN3D.from_config(rnn.get_config())
    assert clone.get_config() == rnn.get_config()
    assert isinstance(clone.cell, cls)
    assert clone.cell.get_config() == rnn.cell.get_config()


# ---------------------------------------------------------------- unpool-conv


@pytest.mark.parametrize("kernel_size,c_in,c_out", [(3, 4, 5), (1, 6, 3)])
def test_unpool_conv_equals_literal_unpool_then_conv(kernel_size, c_in, c_out):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 4, 4, c_in)).astype(np.float32)
    fast = UnpoolConv3D(c_out, kernel_size, bias_initializer="random_normal")
    fast(x)
    literal = keras.layers.Conv3D(c_out, kernel_size, padding="same")
    literal(np.zeros((1, 8, 8, 8, c_in), np.float32))
    literal.set_weights(fast.get_weights())  # same layout: [k,k,k,c_in,c_out], [c_out]
    want = keras.ops.convert_to_numpy(literal(Unpool3D()(x)))
    got = keras.ops.convert_to_numpy(fast(x))
    assert got.shape == (2, 8, 8, 8, c_out)
    assert np.max(np.abs(got - want)) <= 1e-4
    # and both against numpy
    w, b = fast.get_weights()
    np.testing.assert_allclose(got, np_conv3d_same(np_unpool(x), w) + b, atol=1e-4)


def test_unpool_inserts_zeros_at_odd_positions():
    x = np.arange(1, 9, dtype=np.float32).reshape(1, 2, 2, 2, 1)
    got = keras.ops.convert_to_numpy(Unpool3D()(x))
    np.testing.assert_array_equal(got, np_unpool(x))


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize(
    "preset,params",
    [("res3d-gru-3", 35_968_706), ("3d-gru-3", 32_207_266), ("3d-lstm-3", 32_207_266)],
)
def test_paper_parameter_counts(preset, params):
    assert build(preset).count_params() == params


def test_compact_is_small_and_outputs_probabilities():
    m = build("compact")
    assert m.count_params() == 4_696_082
    rng = np.random.default_rng(3)
    views = rng.random((5, 64, 64, 3), dtype=np.float32)
    out = keras.ops.convert_to_numpy(
        m({"views": views, "view_index": np.array([[0, 1, 2], [3, 4, -1]], np.int32)})
    )
    assert out.shape == (2, 32, 32, 32)
    assert np.all((out >= 0) & (out <= 1))


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        build("res3d-gru-4")


def test_flops_scale_with_views_and_objects():
    m = build("compact")
    one, five = count_flops(m, 1, 1), count_flops(m, 1, 5)
    assert count_flops(m, 2, 5) == 2 * five
    per_view = (five - one) // 4
    assert five == one + 4 * per_view  # encoder + one GRU step per extra view


def test_res3d_gru_flops_after_unpool_cut():
    # ~80 GFLOPs literal, minus exactly the zero multiplications of the unpool.
    gflops = count_flops(build("res3d-gru-3"), 1, 5) / 1e9
    assert 60 < gflops < 66


def test_gradients_reach_every_weight():
    m = build("compact")
    rng = np.random.default_rng(4)
    views = tf.constant(rng.random((3, 64, 64, 3), dtype=np.float32))
    index = tf.constant([[0, 1], [2, -1]], tf.int32)
    target = tf.constant(rng.random((2, 32, 32, 32)) > 0.5, tf.float32)
    with tf.GradientTape() as tape:
        p = m({"views": views, "view_index": index}, training=True)
        loss = keras.losses.binary_crossentropy(target[..., None], p[..., None])
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, m.trainable_weights)
    missing = [w.path for w, g in zip(m.trainable_weights, grads, strict=True) if g is None]
    assert not missing
    dead = [
        w.path
        for w, g in zip(m.trainable_weights, grads, strict=True)
        if not np.any(keras.ops.convert_to_numpy(g))
    ]
    assert not dead


# ---------------------------------------------------------------- save / load


def _probe(model, n_views=(2, 3)):
    rng = np.random.default_rng(5)
    s = model.input["views"].shape[1]
    return [rng.integers(0, 256, (n, s, s, 3), np.uint8) for n in n_views]


def test_keras_round_trip_local(tmp_path):
    m = build("compact")
    path = tmp_path / "m.keras"
    save_model(m, str(path))
    loaded = load_model(str(path))
    views = _probe(m)
    a = Reconstructor(m, batch_size=2).predict(views)
    b = Reconstructor(loaded, batch_size=2).predict(views)
    np.testing.assert_array_equal(a, b)
    assert model_id(m) == model_id(loaded)


def test_keras_round_trip_s3(s3_bucket, tmp_path):
    m = build("compact")
    url = f"s3://{s3_bucket}/models/compact.keras"
    save_model(m, url)
    views = _probe(m)
    a = Reconstructor(m, batch_size=2).predict(views)
    r = Reconstructor(url, batch_size=2)
    np.testing.assert_array_equal(a, r.predict(views))
    assert r.model_id == model_id(m)


def test_load_refuses_unsafe_lambda(tmp_path):
    inp = keras.Input((3,))
    out = keras.layers.Lambda(lambda x: x * 2)(inp)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ValueError, match="(?i)unsafe|safe_mode|lambda"):
        load_model(str(path))


# ---------------------------------------------------------------- Reconstructor


@pytest.fixture(scope="module")
def compact_model():
    keras.utils.set_random_seed(7)
    return build("compact")


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-5), ("bf16", 1 / 255)])
def test_output_independent_of_batch_mates(compact_model, precision, atol):
    r = Reconstructor(compact_model, batch_size=4, precision=precision)
    rng = np.random.default_rng(6)
    objs = [rng.integers(0, 256, (n, 64, 64, 3), np.uint8) for n in (1, 5, 3, 2, 4, 3, 1)]
    together = r.predict(objs)
    alone = np.stack([r.predict([o])[0] for o in objs])
    np.testing.assert_allclose(together, alone, atol=atol)


def test_predict_rejects_bad_input_naming_the_object(compact_model):
    r = Reconstructor(compact_model, batch_size=2)
    good = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="object 1: views must be uint8"):
        r.predict([good, good.astype(np.float32)])
    with pytest.raises(ValueError, match=r"object 2: views must have shape \[n, 64, 64, 3\]"):
        r.predict([good, good, np.zeros((2, 32, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match="object 0: has no views"):
        r.predict([np.zeros((0, 64, 64, 3), np.uint8)])


def test_bf16_close_to_fp32(compact_model):
    views = _probe(compact_model, (1, 4, 5))
    fp32 = Reconstructor(compact_model, batch_size=4).predict(views)
    bf16 = Reconstructor(compact_model, batch_size=4, precision="bf16").predict(views)
    assert np.max(np.abs(fp32 - bf16)) < 0.05
    assert np.mean(np.abs(fp32 - bf16)) < 0.01


def test_traced_once_for_many_shapes(compact_model):
    r = Reconstructor(compact_model, batch_size=3)
    rng = np.random.default_rng(8)
    for counts in [(1,), (2, 3, 4), (5, 1), (7, 2, 2)]:
        r.predict([rng.integers(0, 256, (n, 64, 64, 3), np.uint8) for n in counts])
    assert r._forward.experimental_get_tracing_count() == 1


def test_default_weights_missing_is_clear(monkeypatch, tmp_path):
    import model.saving as saving

    monkeypatch.setattr(saving, "DEFAULT_WEIGHTS", tmp_path / "absent.keras")
    with pytest.raises(FileNotFoundError, match="pass a model"):
        saving.load_default()


def test_auto_precision_follows_the_hardware(compact_model):
    from model.reconstructor import bf16_supported

    r = Reconstructor(compact_model, batch_size=1, precision="auto")
    assert r.precision == ("bf16" if bf16_supported("cpu") else "fp32")


# ---------------------------------------------------------------- warm start


def test_transfer_between_equal_networks_copies_everything():
    from model.transfer import transfer_weights

    keras.utils.set_random_seed(1)
    src, dst = build("compact"), build("compact")
    report = transfer_weights(src, dst)
    assert set(report.values()) == {"copied"} and "fc7" in report and "recurrence" in report
    views = _probe(src)
    np.testing.assert_array_equal(
        Reconstructor(src, batch_size=2).predict(views),
        Reconstructor(dst, batch_size=2).predict(views),
    )


def test_transfer_to_another_image_size_resamples_only_fc7():
    from model.transfer import transfer_weights

    keras.utils.set_random_seed(2)
    src, dst = build("compact"), build("compact", image_size=96)
    report = transfer_weights(src, dst)
    assert report.pop("fc7") == "resampled" and set(report.values()) == {"copied"}
    for name in report:
        a, b = src.get_layer(name).get_weights(), dst.get_layer(name).get_weights()
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    kernel, bias = dst.get_layer("fc7").get_weights()
    assert kernel.shape == (4 * 4 * 128, 256)  # 96 px ends in a 4x4 map, 64 px in 3x3
    np.testing.assert_array_equal(bias, src.get_layer("fc7").get_weights()[1])


def test_resampled_kernel_keeps_a_position_blind_kernel_and_its_output():
    from model.transfer import resample_dense_kernel

    rng = np.random.default_rng(3)
    per_position = rng.normal(size=(1, 1, 4, 5)).astype(np.float32)  # c=4, units=5
    kernel = np.broadcast_to(per_position, (3, 3, 4, 5)).reshape(36, 5)
    new = resample_dense_kernel(kernel, (3, 3, 4), (4, 4))
    assert new.shape == (64, 5)
    np.testing.assert_allclose(
        new.reshape(4, 4, 4, 5), np.broadcast_to(per_position * 9 / 16, (4, 4, 4, 5)), rtol=1e-5
    )
    feature = rng.normal(size=4).astype(np.float32)  # the same at every position
    np.testing.assert_allclose(np.tile(feature, 16) @ new, np.tile(feature, 9) @ kernel, rtol=1e-4)


def test_transfer_refuses_what_does_not_fit():
    from model import PRESETS
    from model.network import EncoderBlock
    from model.transfer import transfer_weights

    four_blocks = build("compact", encoder=PRESETS["compact"].encoder[:4])
    with pytest.raises(ValueError, match="no layer 'conv5a'"):
        transfer_weights(four_blocks, build("compact"))
    with pytest.raises(ValueError, match=r"ConvRNN3D\(ConvLSTM3DCell\) in the source"):
        transfer_weights(build("compact", cell="lstm"), build("compact"))
    narrow = (EncoderBlock(8, first_kernel=7), *PRESETS["compact"].encoder[1:])
    with pytest.raises(ValueError, match="'conv1a': source shapes .* do not fit"):
        transfer_weights(build("compact"), build("compact", encoder=narrow))  # narrower
    with pytest.raises(ValueError, match="'recurrence': source shapes .* do not fit"):
        transfer_weights(build("compact", fc_units=128), build("compact"))  # the GRU's input
    with pytest.raises(ValueError, match="change one at a time"):
        transfer_weights(build("compact", fc_units=128), build("compact", image_size=96))


def test_widening_keeps_what_the_network_computes():
    from model.transfer import transfer_weights

    keras.utils.set_random_seed(4)
    src, dst = build("compact"), build("compact-wide")
    report = transfer_weights(src, dst)
    widened = {n for n, how in report.items() if how == "widened"}
    assert widened == {"conv4a", "conv4b", "conv4c", "conv5a", "conv5b", "fc7"}
    assert dst.count_params() == 5_437_778 and dst.count_params() * 4 < 25e6
    views = _probe(src, n_views=(1, 5, 3))
    np.testing.assert_allclose(
        Reconstructor(dst, batch_size=3, precision="fp32").predict(views),
        Reconstructor(src, batch_size=3, precision="fp32").predict(views),
        atol=1e-5,
    )
    # the new channels are computed (fresh weights into them) and read by nothing
    kernel = dst.get_layer("conv5a").get_weights()[0]
    assert np.all(kernel[..., 128:, :] == 0) and np.any(kernel[..., :128, 128:] != 0)
    fc7 = dst.get_layer("fc7").get_weights()[0].reshape(3, 3, 192, 256)
    assert np.all(fc7[:, :, 128:, :] == 0)
