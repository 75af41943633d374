"""3D-R2N2 as a Keras functional model: config, presets, build.

One frozen `NetworkConfig` describes the whole network (encoder blocks, the
recurrent grid, decoder stages); `PRESETS` names the paper's variants and this
project's CPU-sized `compact`; `build` turns a config into a `keras.Model`.

The model takes the views of a batch of objects packed together, so the 2D
encoder never spends a FLOP on padding:

    inputs   views       float32 [n_views, S, S, 3] in [0, 1]
             view_index  int32   [batch, time]; row of `views`, -1 = no view
    output   occupancy   float32 [batch, 32, 32, 32], p(occupied)

This module only builds graphs; it must never read files or know about Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras

from model.layers import (
    ConvGRU3DCell,
    ConvLSTM3DCell,
    ConvRNN3D,
    GatherViews,
    Occupancy,
    Unpool3D,
    UnpoolConv3D,
)

LEAK = 0.01
# The original initialises every kernel with MSRA (He) Gaussian noise; Keras'
# default (Glorot) lets the signal fade to nothing through the decoder.
INIT = "he_normal"


@dataclass(frozen=True)
class EncoderBlock:
    """A 2D block: `convs` convolutions, an optional shortcut, then a pool.

    `shortcut`: "none", "identity", or "conv" (a 1x1 conv of the block input),
    added after the last activation, before the pool.
    """

    filters: int
    convs: int = 2
    first_kernel: int = 3
    shortcut: str = "none"


@dataclass(frozen=True)
class DecoderStage:
    """A 3D stage: optional unpool x2, `convs` 3^3 convolutions, a shortcut.

    `shortcut`: "none"; "identity" (the stage input, unpooled); "conv" (a 1x1
    conv of the unpooled input); "first" (a 3^3 conv of the first conv's
    activation, as conv10c of the original).
    """

    filters: int
    convs: int = 2
    unpool: bool = True
    shortcut: str = "none"


@dataclass(frozen=True)
class NetworkConfig:
    """Everything that defines a 3D-R2N2 network."""

    name: str
    image_size: int
    encoder: tuple[EncoderBlock, ...]
    fc_units: int
    cell: str  # "gru" | "lstm"
    grid: int
    hidden: int
    decoder: tuple[DecoderStage, ...]
    # The original 3D-GRU-3 pools before the activation; Res3D-GRU-3 after.
    activate_before_pool: bool = True
    voxels: int = 32


def _paper_encoder(residual: bool) -> tuple[EncoderBlock, ...]:
    filters = (96, 128, 256, 256, 256, 256)
    if not residual:
        return tuple(
            EncoderBlock(f, convs=1, first_kernel=7 if i == 0 else 3) for i, f in enumerate(filters)
        )
    shortcuts = ("none", "conv", "conv", "none", "conv", "identity")
    return tuple(
        EncoderBlock(f, convs=2, first_kernel=7 if i == 0 else 3, shortcut=s)
        for i, (f, s) in enumerate(zip(filters, shortcuts, strict=True))
    )


_PLAIN_DECODER = (
    DecoderStage(128, convs=1),
    DecoderStage(128, convs=1),
    DecoderStage(64, convs=1),
    DecoderStage(32, convs=1, unpool=False),
)

PRESETS: dict[str, NetworkConfig] = {
    # The paper's best network and the original code's default.
    "res3d-gru-3": NetworkConfig(
        name="res3d-gru-3",
        image_size=127,
        encoder=_paper_encoder(residual=True),
        fc_units=1024,
        cell="gru",
        grid=4,
        hidden=128,
        decoder=(
            DecoderStage(128, shortcut="identity"),
            DecoderStage(128, shortcut="identity"),
            DecoderStage(64, shortcut="conv"),
            DecoderStage(32, unpool=False, shortcut="first"),
        ),
        activate_before_pool=True,
    ),
    "3d-gru-3": NetworkConfig(
        name="3d-gru-3",
        image_size=127,
        encoder=_paper_encoder(residual=False),
        fc_units=1024,
        cell="gru",
        grid=4,
        hidden=128,
        decoder=_PLAIN_DECODER,
        activate_before_pool=False,
    ),
    "3d-lstm-3": NetworkConfig(
        name="3d-lstm-3",
        image_size=127,
        encoder=_paper_encoder(residual=False),
        fc_units=1024,
        cell="lstm",
        grid=4,
        hidden=128,
        decoder=_PLAIN_DECODER,
        activate_before_pool=False,
    ),
    # Res3D-GRU-3's wiring at CPU size: 64 px input, 5 blocks (64 -> 3 after
    # the pools, as 127 -> 3 after six), a 4^3 x 64 GRU, and a decoder whose
    # every 32^3 conv but the last is an unpool-conv (1/8 cost).
    "compact": NetworkConfig(
        name="compact",
        image_size=64,
        encoder=(
            EncoderBlock(16, first_kernel=7),
            EncoderBlock(32, shortcut="conv"),
            EncoderBlock(64, shortcut="conv"),
            EncoderBlock(128, shortcut="conv"),
            EncoderBlock(128, shortcut="identity"),
        ),
        fc_units=256,
        cell="gru",
        grid=4,
        hidden=64,
        decoder=(
            DecoderStage(64, shortcut="identity"),
            DecoderStage(32, shortcut="conv"),
            DecoderStage(16, convs=1, shortcut="conv"),
        ),
        activate_before_pool=True,
    ),
}
# compact with 192-channel encoder blocks 4 and 5 (cheap in FLOPs at 9x9 and
# 5x5): a network that `model.transfer` warm-starts from compact weights.
PRESETS["compact-wide"] = dataclasses.replace(
    PRESETS["compact"],
    name="compact-wide",
    encoder=(
        *PRESETS["compact"].encoder[:3],
        EncoderBlock(192, shortcut="conv"),
        EncoderBlock(192, shortcut="identity"),
    ),
)


def _lrelu(name: str) -> keras.layers.Layer:
    return keras.layers.LeakyReLU(negative_slope=LEAK, name=name)


def _encoder(views, config: NetworkConfig):
    x = views
    for b, block in enumerate(config.encoder, start=1):
        block_in = x
        for c in range(block.convs):
            kernel = block.first_kernel if c == 0 else 3
            x = keras.layers.Conv2D(
                block.filters,
                kernel,
                padding="same",
                kernel_initializer=INIT,
                name=f"conv{b}{'ab'[c]}",
            )(x)
            if config.activate_before_pool:
                x = _lrelu(f"lrelu{b}{'ab'[c]}")(x)
        if block.shortcut == "conv":
            short = keras.layers.Conv2D(
                block.filters, 1, kernel_initializer=INIT, name=f"conv{b}c"
            )(block_in)
            x = keras.layers.Add(name=f"res{b}")([short, x])
        elif block.shortcut == "identity":
            x = keras.layers.Add(name=f"res{b}")([block_in, x])
        # Zero padding, not -inf: the original pads the (activated) map with
        # zeros before its 2x2 pool.
        x = keras.layers.ZeroPadding2D(1, name=f"pad{b}")(x)
        x = keras.layers.MaxPooling2D(2, 2, name=f"pool{b}")(x)
        if not config.activate_before_pool:
            x = _lrelu(f"lrelu{b}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(config.fc_units, kernel_initializer=INIT, name="fc7")(x)
    return _lrelu("lrelu_fc7")(x)


def _decoder(h, config: NetworkConfig):
    x = h
    for s, stage in enumerate(config.decoder, start=7):
        stage_in = x
        unpooled = None
        first_act = None
        for c in range(stage.convs):
            name = f"conv{s}{'ab'[c]}" if stage.convs > 1 else f"conv{s}"
            if c == 0 and stage.unpool:
                x = UnpoolConv3D(stage.filters, 3, kernel_initializer=INIT, name=name)(x)
            else:
                x = keras.layers.Conv3D(
                    stage.filters, 3, padding="same", kernel_initializer=INIT, name=name
                )(x)
            x = _lrelu(f"lrelu{name[4:]}")(x)
            if c == 0:
                first_act = x
        if stage.shortcut == "identity":
            unpooled = Unpool3D(name=f"unpool{s}")(stage_in) if stage.unpool else stage_in
            x = keras.layers.Add(name=f"res{s}")([unpooled, x])
        elif stage.shortcut == "conv":
            if stage.unpool:
                short = UnpoolConv3D(stage.filters, 1, kernel_initializer=INIT, name=f"conv{s}c")(
                    stage_in
                )
            else:
                short = keras.layers.Conv3D(
                    stage.filters, 1, kernel_initializer=INIT, name=f"conv{s}c"
                )(stage_in)
            x = keras.layers.Add(name=f"res{s}")([short, x])
        elif stage.shortcut == "first":
            short = keras.layers.Conv3D(
                stage.filters, 3, padding="same", kernel_initializer=INIT, name=f"conv{s}c"
            )(first_act)
            x = keras.layers.Add(name=f"res{s}")([short, x])
    logits = keras.layers.Conv3D(
        2, 3, padding="same", kernel_initializer=INIT, name="logits", dtype="float32"
    )(x)
    return Occupancy(name="occupancy", dtype="float32")(logits)


def _cell(config: NetworkConfig) -> keras.layers.Layer:
    cells = {"gru": ConvGRU3DCell, "lstm": ConvLSTM3DCell}
    if config.cell not in cells:
        raise ValueError(f"cell must be one of {sorted(cells)}, got {config.cell!r}")
    return cells[config.cell](
        config.hidden,
        config.grid,
        fc_initializer=INIT,
        conv_initializer=INIT,
        name=f"{config.cell}_cell",
    )


def build_from_config(config: NetworkConfig) -> keras.Model:
    """The Keras model for `config` (fresh weights)."""
    if config.voxels != config.grid * 2 ** sum(st.unpool for st in config.decoder):
        raise ValueError("decoder unpools must take the grid to the voxel resolution")
    s = config.image_size
    views = keras.Input((s, s, 3), name="views")
    view_index = keras.Input((None,), dtype="int32", name="view_index")
    features = _encoder(views, config)
    sequences, mask = GatherViews(name="gather_views")(features, view_index)
    h = ConvRNN3D(_cell(config), name="recurrence")(sequences, mask=mask)
    occupancy = _decoder(h, config)
    return keras.Model({"views": views, "view_index": view_index}, occupancy, name=config.name)


def build(preset: str = "compact", **overrides) -> keras.Model:
    """Build a preset ("res3d-gru-3", "3d-gru-3", "3d-lstm-3", "compact",
    "compact-wide"),
    optionally overriding fields of its `NetworkConfig` (e.g. `image_size=96`).

    Example:
        >>> model = build("res3d-gru-3")
        >>> model.count_params()
        35968706
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return build_from_config(dataclasses.replace(PRESETS[preset], **overrides))
