"""Builders of the (2+1)D ResNets: the tutorial's network and the paper's R(2+1)D-10/18/34.

Each builder returns a Functional `keras.Model` that takes uint8 clips
`[batch, frames, height, width, 3]`, rescales them inside, and returns float32
logits, whatever the dtype policy of the layers in between.
"""

import keras
from keras import layers

from model.network.layers import (Conv2Plus1D, Project, RandomFlipClips, ResidualBlock2Plus1D,
                          ResidualMain, ResizeVideo)

def clip_input(num_frames, image_size):
    """The uint8 clip input; `None` sizes leave them free."""
    return keras.Input(shape=(num_frames, image_size, image_size, 3), dtype="uint8",
                       name="clips")


def logits_layer(num_classes):
    # Logits stay float32 under a mixed policy, so the softmax and the loss are stable.
    return layers.Dense(num_classes, dtype="float32", name="logits")


def _residual_block(x, filters, kernel_size):
    out = ResidualMain(filters, kernel_size)(x)
    shortcut = x if x.shape[-1] == filters else Project(filters)(x)
    return layers.add([shortcut, out])


def augmented_input(num_frames, image_size, flip):
    """The uint8 clip input and what the network reads: the clips scaled to [0, 1].

    With `flip`, randomly flipped after the rescaling: a select on floats
    stays on the GPU, where uint8 has no select kernel.
    """
    clips = clip_input(num_frames, image_size)
    x = layers.Rescaling(1 / 255, name="rescale")(clips)
    return clips, (RandomFlipClips(name="random_flip")(x) if flip else x)


def tutorial(num_classes, num_frames=10, image_size=224, flip=False):
    """The TensorFlow tutorial's (2+1)D ResNet, layer for layer.

    16/32/64/128 filters, LayerNormalization in the residual blocks,
    `ResizeVideo` halving the frames between stages, global average pooling
    and dense logits. With `flip`, clips are randomly flipped in training, on
    the device.
    """
    if image_size is None or image_size < 16:
        raise ValueError("the tutorial model resizes to image_size // 16: give an "
                         "image_size of 16 or more")
    clips, x = augmented_input(num_frames, image_size, flip)
    x = Conv2Plus1D(16, (3, 7, 7), name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = ResizeVideo(image_size // 2, image_size // 2)(x)
    x = _residual_block(x, 16, (3, 3, 3))
    x = ResizeVideo(image_size // 4, image_size // 4)(x)
    x = _residual_block(x, 32, (3, 3, 3))
    x = ResizeVideo(image_size // 8, image_size // 8)(x)
    x = _residual_block(x, 64, (3, 3, 3))
    x = ResizeVideo(image_size // 16, image_size // 16)(x)
    x = _residual_block(x, 128, (3, 3, 3))
    x = layers.GlobalAveragePooling3D(name="pool")(x)
    logits = logits_layer(num_classes)(x)
    return keras.Model(clips, logits, name="tutorial")


def make_divisible(channels, divisor=8):
    """Rounds a scaled channel count to a multiple of 8, as tensor cores like."""
    return max(divisor, int(channels + divisor / 2) // divisor * divisor)


# Kinetics-400 statistics of RGB in [0, 1], which torchvision's video weights expect.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
STAGE_CHANNELS = (64, 128, 256, 512)
STEM_CHANNELS = (45, 64)


def r2plus1d(num_classes, stages=(2, 2, 2, 2), num_frames=16, image_size=112,
             width_multiplier=1.0, dropout=0.0, bn_momentum=0.9, bn_epsilon=1e-3,
             input_stats=None, widths=None, padding="same", flip=False, name="r2plus1d_18"):
    """R(2+1)D after Tran et al. 2018, as torchvision's `r2plus1d_18` lays it out.

    Stem: a 1x7x7 spatial convolution to 45 channels, then a 3x1x1 temporal
    one to 64, each with BatchNorm and ReLU. Four stages of basic blocks with
    64/128/256/512 channels; stages 2-4 halve time and space. Global average
    pooling and dense logits.

    Args:
        num_classes: number of output logits.
        stages: basic blocks per stage.
        num_frames: clip length, or None for any.
        image_size: frame side, or None for any.
        width_multiplier: scales every channel count (rounded to multiples of
            8 when not 1). Defaults to 1.0.
        dropout: dropout before the logits. Defaults to 0.
        bn_momentum: BatchNorm momentum; 0.9 lets short runs settle their
            moving statistics. Defaults to 0.9.
        bn_epsilon: BatchNorm epsilon (PyTorch's is 1e-5). Defaults to 1e-3.
        input_stats: `(mean, std)` per RGB channel of pixels in [0, 1], to
            normalise clips inside the model (`KINETICS_MEAN, KINETICS_STD`
            for torchvision's weights), or None to only rescale to [0, 1].
            Defaults to None.
        widths: channel counts read from a checkpoint instead of computed:
            `{"stem": (c1, c2), "stages": (c1, .., c4), "mid": {block name:
            (m1, m2)}}`, any part optional. Defaults to None.
        padding: `"same"`, or `"symmetric"` to pad strided convolutions as
            PyTorch does, which torchvision's weights need (see
            `Conv2Plus1D`). `"same"` trains faster on CPUs, where TensorFlow
            cannot fuse an explicit padding into the convolutions' gradients.
            Defaults to `"same"`.
        flip: random horizontal flips of the clips in training, on the
            device. Defaults to False.
        name: the model's name.
    """
    def width(channels):
        return channels if width_multiplier == 1.0 else make_divisible(
            channels * width_multiplier)

    widths = widths or {}
    stem = widths.get("stem") or tuple(width(c) for c in STEM_CHANNELS)
    stage_channels = widths.get("stages") or tuple(width(c) for c in STAGE_CHANNELS)
    mids = widths.get("mid") or {}
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
    clips, x = augmented_input(num_frames, image_size, flip)
    if input_stats is not None:
        mean, std = input_stats
        x = layers.Normalization(mean=list(mean), variance=[s * s for s in std],
                                 name="input_norm")(x)
    if padding == "symmetric":
        x = layers.ZeroPadding3D(((0, 0), (3, 3), (3, 3)), name="stem_pad")(x)
    x = layers.Conv3D(stem[0], (1, 7, 7), strides=(1, 2, 2), use_bias=False,
                      padding="valid" if padding == "symmetric" else "same",
                      name="stem_spatial")(x)
    x = layers.BatchNormalization(name="stem_spatial_bn", **bn)(x)
    x = layers.ReLU(name="stem_spatial_relu")(x)
    x = layers.Conv3D(stem[1], (3, 1, 1), padding="same", use_bias=False,
                      name="stem_temporal")(x)
    x = layers.BatchNormalization(name="stem_temporal_bn", **bn)(x)
    x = layers.ReLU(name="stem_temporal_relu")(x)
    for stage, (blocks, channels) in enumerate(zip(stages, stage_channels), 1):
        for block in range(blocks):
            block_name = f"stage{stage}_block{block + 1}"
            x = ResidualBlock2Plus1D(channels, strides=2 if stage > 1 and block == 0 else 1,
                                     bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                                     mid_filters=mids.get(block_name), padding=padding,
                                     name=block_name)(x)
    x = layers.GlobalAveragePooling3D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    logits = logits_layer(num_classes)(x)
    return keras.Model(clips, logits, name=name)
