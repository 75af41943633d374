"""The model actor (``pipeline.infer.Reconstruct``) without Ray: its lean path
gives exactly what the reference path gives (``Reconstructor.predict`` and the
functions of ``model.voxels``), rows are grouped by view count and passed
without copies where they lie in order, out of memory halves the call, and a
device error never fails a row. The stand-in device (``model.standin``) and
the stats actor's message budget are tested here too.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import shapes
from model.standin import StandIn, StandInSpec
from model.voxels import iou, occupied, quantize, unpack_voxels
from pipeline import progress
from pipeline.decode import DecodeConfig, decode_batch, pixels_to_views
from pipeline.infer import InferConfig, Reconstruct, gather, packed_views

SIZE = 64


def decoded_batch(counts: list[int], seed: int = 3, truth_every: int = 2) -> pa.Table:
    """Decode-stage output for objects with ``counts`` views (0: a row whose
    only view is not an image, so it arrives failed), in two Arrow chunks."""
    rows = []
    for i, n in enumerate(counts):
        row = shapes.generate_object(seed, i, views=max(n, 1), image_size=137)
        views = row["views"][:n] if n else [b"not an image"]
        rows.append(
            {
                "object_id": row["object_id"],
                "views": views,
                "voxels": row["voxels"] if i % truth_every == 0 else None,
                "sku": i,
            }
        )
    table = pa.Table.from_pylist(rows)
    decoded = decode_batch(table, DecodeConfig(image_size=SIZE))
    half = len(counts) // 2
    return pa.concat_tables([decoded.slice(0, half), decoded.slice(half)])


class Recording(StandIn):
    """The stand-in device, remembering what each call was given."""

    def __init__(self, spec: str, batch_size: int):
        super().__init__(spec, batch_size)
        self.given: list[tuple[np.ndarray, np.ndarray]] = []

    def run_packed(self, views, counts, level):
        self.given.append((views, np.array(counts)))
        return super().run_packed(views, counts, level)


def stand_in_actor(spec: str = "", batch_size: int = 4) -> Reconstruct:
    actor = Reconstruct(
        InferConfig(model="", image_size=SIZE, batch_size=batch_size, stand_in=spec)
    )
    actor.reconstructor = Recording(spec, batch_size)
    return actor


def test_actor_matches_the_reference_path():
    """The shipped model through the actor: the same grids (bit for bit),
    occupancy and IoU as predict() with model.voxels' functions, row order and
    carried columns kept, failed rows passed through untouched."""
    counts = [3, 1, 5, 0, 5, 2, 7, 5, 1, 3]
    batch = decoded_batch(counts)
    actor = Reconstruct(InferConfig(model="", image_size=SIZE, batch_size=3))
    out = actor(batch)

    assert out.num_rows == batch.num_rows
    assert out.column("object_id").to_pylist() == batch.column("object_id").to_pylist()
    assert out.column("sku").to_pylist() == list(range(len(counts)))
    status = out.column("status").to_pylist()
    assert status == ["failed" if n == 0 else "ok" for n in counts]
    assert out.column("error").to_pylist()[3] == batch.column("error").to_pylist()[3]
    assert set(out.column("model").to_pylist()) == {actor.model_id}

    pixels = batch.column("pixels").to_pylist()
    ok = [i for i, s in enumerate(status) if s == "ok"]
    reference = actor.reconstructor.predict([pixels_to_views(pixels[i], SIZE) for i in ok])
    grids = out.column("probabilities").to_pylist()
    truths = batch.column("voxels").to_pylist()
    for k, i in enumerate(ok):
        expected = quantize(reference[k])
        assert grids[i] == expected.tobytes(), f"row {i}"
        mask = occupied(expected, actor.config.threshold)
        assert out.column("occupied_voxels")[i].as_py() == int(mask.sum())
        got_iou = out.column("iou")[i].as_py()
        if truths[i] is None:
            assert got_iou is None
        else:
            assert got_iou == pytest.approx(float(iou(mask, unpack_voxels(truths[i]))), abs=1e-6)
    assert grids[3] is None and out.column("occupied_voxels")[3].as_py() is None


def test_rows_are_grouped_by_view_count_without_copies_in_order():
    counts = [2, 5, 2, 5, 5, 1, 2, 5, 5, 5, 5, 5]
    batch = decoded_batch(counts, truth_every=3)
    actor = stand_in_actor(batch_size=4)
    out = actor(batch)
    assert out.column("status").to_pylist() == ["ok"] * len(counts)
    calls = actor.reconstructor.given
    assert all(len(set(c.tolist())) == 1 for _, c in calls), [c for _, c in calls]
    assert sorted(int(n) for _, c in calls for n in c) == sorted(counts)
    assert max(len(c) for _, c in calls) <= 4
    # one Arrow chunk of rows in order: the views are the Arrow buffer itself
    views, first, got, whole = packed_views(batch.column("pixels"), SIZE)
    assert whole.all() and got.tolist() == counts
    members = np.array([7, 8, 9])  # consecutive 5-view rows of the second chunk
    sliced = gather(views, first, got, members)
    assert np.shares_memory(sliced, views[1])
    mixed = gather(views, first, got, np.array([1, 3, 7]))  # across chunks: one copy
    expected = np.concatenate([pixels_to_views(batch.column("pixels")[i].as_py(), SIZE)
                               for i in (1, 3, 7)])  # fmt: skip
    assert np.array_equal(mixed, expected)


def test_out_of_memory_halves_the_call_and_fails_no_row():
    batch = decoded_batch([3] * 8)
    actor = stand_in_actor("fail=oom@1", batch_size=8)
    out = actor(batch)
    assert out.column("status").to_pylist() == ["ok"] * 8
    assert actor.chunk == 4
    assert [len(c) for _, c in actor.reconstructor.given] == [8, 4, 4]


def test_a_device_error_outside_a_job_raises_instead_of_failing_rows():
    batch = decoded_batch([2] * 4)
    actor = stand_in_actor("fail=cuda@1")
    with pytest.raises(RuntimeError, match="CUDA_ERROR_ILLEGAL_ADDRESS"):
        actor(batch)


def test_stand_in_spec_and_grids():
    spec = StandInSpec.parse("latency_ms=2, per_object_us=50, image_size=32, fail=oom@2+5")
    assert (spec.latency_ms, spec.per_object_us, spec.image_size) == (2.0, 50.0, 32)
    assert spec.fail == "oom" and spec.fail_calls == (2, 5)
    assert StandInSpec.parse("fail=cuda@every").fail_calls == ()
    for bad in ("latency=3", "fail=disk@1", "fail=oom", "latency_ms=-1", "fail=oom@0"):
        with pytest.raises(ValueError, match="--stand-in"):
            StandInSpec.parse(bad)
    device = StandIn("latency_ms=20", batch_size=4)
    views = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), np.uint8)
    grids, counts = device.run_packed(views, np.array([1, 2, 3]), 102)
    assert grids.shape == (3, 32, 32, 32) and grids.dtype == np.uint8
    assert counts.tolist() == [int((g >= 102).sum()) for g in grids]
    assert device.busy_s >= 0.02
    restarted = StandIn("fail=cuda@1", batch_size=4, reconstructed=True)
    restarted.run_packed(views, np.array([6]), 102)  # a restarted process runs clean


def test_beat_sends_at_most_one_message_per_batch(ray_local):
    """Many fast batches: the stats actor hears from the actor a few times a
    second, not twice per batch; it still sees every batch and row."""
    import ray

    stats = progress.start()
    ray.get(stats.register.remote("a1", None, "here"))
    beat = progress.Beat(stats, "a1", lambda: 0.0, keepalive=60.0)
    calls = 400
    for _ in range(calls):
        token = beat.begin()
        beat.end(token, 16)
    deadline = 50
    while deadline and progress.snapshot(stats)["actors"]["calls"] < calls:
        import time

        time.sleep(0.1)
        deadline -= 1
    now = progress.snapshot(stats)
    assert now["actors"]["calls"] == calls and now["actors"]["rows"] == 16 * calls
    assert now["messages"] <= 1 + 5, now  # register + a few beats


@pytest.mark.slow
def test_xla_compiles_once_per_view_bucket():
    """With XLA every call is padded to [batch_size, bucket] objects x views, so
    however the view counts and call sizes vary, a run traces (and compiles)
    once per view bucket it meets; without XLA, once in all."""
    from model import Reconstructor, build_from_config
    from model.network import DecoderStage, EncoderBlock, NetworkConfig
    from model.reconstructor import view_bucket

    tiny = NetworkConfig(
        name="tiny",
        image_size=16,
        encoder=(EncoderBlock(4, first_kernel=3), EncoderBlock(4, shortcut="conv")),
        fc_units=8,
        cell="gru",
        grid=4,
        hidden=4,
        decoder=(DecoderStage(4), DecoderStage(4), DecoderStage(4, convs=1)),
    )
    net = build_from_config(tiny)
    rng = np.random.default_rng(0)
    calls = [[1], [2, 2, 2], [5, 5], [7, 7, 7, 7], [8, 8], [1, 1, 1], [5], [2]]
    inputs = [rng.integers(0, 256, (sum(c), 16, 16, 3), np.uint8) for c in calls]
    plain = Reconstructor(net, batch_size=4, jit_compile=False)
    xla = Reconstructor(net, batch_size=4, jit_compile=True)
    for views, counts in zip(inputs, calls, strict=True):
        a = plain.run_packed(views, np.array(counts), 102)[0]
        b = xla.run_packed(views, np.array(counts), 102)[0]
        assert a.shape == b.shape == (len(counts), 32, 32, 32)
        # padding the call changes nothing but rounding
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert plain.traces == 1
    assert xla.traces == len({view_bucket(c[0]) for c in calls}) == 4
