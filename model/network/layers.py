"""Keras 3 layers of (2+1)D ResNets: the factorised convolution, residual blocks, video resize.

Also the one augmentation that runs on the device: `RandomFlipClips`.

Each layer is registered with Keras, so a `.keras` file that uses it reloads in
a fresh process with `safe_mode=True` and no `custom_objects`.
"""

import einops
import keras
from keras import layers, ops

PACKAGE = "twoplusone"


def _triple(value):
    return (value,) * 3 if isinstance(value, int) else tuple(value)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv2Plus1D(keras.layers.Layer):
    """A (2+1)D convolution: a 1xkxk spatial convolution, then a kx1x1 temporal one.

    With `mid_norm`, BatchNorm and ReLU sit between the two, as in R(2+1)D;
    without, it is the tutorial's plain pair of convolutions.

    Args:
        filters: output channels.
        kernel_size: `(t, h, w)` or an int for all three.
        strides: `(t, h, w)` strides; spatial ones go to the spatial
            convolution, the temporal one to the temporal. Defaults to 1.
        mid_filters: channels between the two convolutions. Defaults to `filters`.
        mid_norm: BatchNorm and ReLU between the convolutions. Defaults to False.
        use_bias: biases in both convolutions. Defaults to True.
        padding: `"same"`, `"valid"` or `"symmetric"`: half the kernel on
            each side, as PyTorch pads. Keras's `"same"` puts the odd pixel
            of a strided convolution on one side only, so a stride-2 layer
            sees its input shifted by one pixel against PyTorch's: converted
            weights need `"symmetric"`. Defaults to `"same"`.
        bn_momentum: momentum of the inner BatchNorm. Defaults to 0.9.
        bn_epsilon: epsilon of the inner BatchNorm. Defaults to 1e-3.
    """

    def __init__(self, filters, kernel_size, strides=1, mid_filters=None, mid_norm=False,
                 use_bias=True, padding="same", bn_momentum=0.9, bn_epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = _triple(kernel_size)
        self.strides = _triple(strides)
        self.mid_filters = mid_filters or filters
        self.mid_norm = mid_norm
        self.use_bias = use_bias
        self.padding = padding
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        t, h, w = self.kernel_size
        st, sh, sw = self.strides
        # Unstrided, "same" is symmetric already (odd kernels); explicit zero
        # padding only where a stride makes the two differ.
        spatial_pad = padding == "symmetric" and (sh, sw) != (1, 1)
        temporal_pad = padding == "symmetric" and st != 1
        same = "same" if padding == "symmetric" else padding
        self.spatial = layers.Conv3D(self.mid_filters, (1, h, w), strides=(1, sh, sw),
                                     padding="valid" if spatial_pad else same,
                                     use_bias=use_bias, dtype=self.dtype_policy,
                                     name="spatial")
        self.temporal = layers.Conv3D(filters, (t, 1, 1), strides=(st, 1, 1),
                                      padding="valid" if temporal_pad else same,
                                      use_bias=use_bias, dtype=self.dtype_policy,
                                      name="temporal")
        self.spatial_pad = self.temporal_pad = None
        if spatial_pad:
            self.spatial_pad = layers.ZeroPadding3D(((0, 0), (h // 2, h // 2), (w // 2, w // 2)),
                                                    dtype=self.dtype_policy, name="spatial_pad")
        if temporal_pad:
            self.temporal_pad = layers.ZeroPadding3D(((t // 2, t // 2), (0, 0), (0, 0)),
                                                     dtype=self.dtype_policy, name="temporal_pad")
        if mid_norm:
            self.mid_bn = layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon,
                                                    dtype=self.dtype_policy, name="mid_bn")
            self.mid_relu = layers.ReLU(dtype=self.dtype_policy, name="mid_relu")

    def _spatial_shape(self, input_shape):
        if self.spatial_pad:
            input_shape = self.spatial_pad.compute_output_shape(input_shape)
        return input_shape, self.spatial.compute_output_shape(input_shape)

    def _temporal_shape(self, mid_shape):
        if self.temporal_pad:
            mid_shape = self.temporal_pad.compute_output_shape(mid_shape)
        return mid_shape, self.temporal.compute_output_shape(mid_shape)

    def build(self, input_shape):
        padded, mid_shape = self._spatial_shape(input_shape)
        self.spatial.build(padded)
        if self.mid_norm:
            self.mid_bn.build(mid_shape)
        self.temporal.build(self._temporal_shape(mid_shape)[0])

    def call(self, inputs, training=None):
        x = self.spatial(self.spatial_pad(inputs) if self.spatial_pad else inputs)
        if self.mid_norm:
            x = self.mid_relu(self.mid_bn(x, training=training))
        return self.temporal(self.temporal_pad(x) if self.temporal_pad else x)

    def compute_output_shape(self, input_shape):
        return self._temporal_shape(self._spatial_shape(input_shape)[1])[1]

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      strides=self.strides, mid_filters=self.mid_filters,
                      mid_norm=self.mid_norm, use_bias=self.use_bias,
                      padding=self.padding, bn_momentum=self.bn_momentum,
                      bn_epsilon=self.bn_epsilon)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualMain(keras.layers.Layer):
    """The tutorial's residual branch: (2+1)D conv, LayerNorm, ReLU, (2+1)D conv, LayerNorm.

    Args:
        filters: output channels.
        kernel_size: `(t, h, w)` kernel of both convolutions.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = _triple(kernel_size)
        policy = self.dtype_policy
        self.conv1 = Conv2Plus1D(filters, kernel_size, dtype=policy, name="conv1")
        self.norm1 = layers.LayerNormalization(dtype=policy, name="norm1")
        self.relu = layers.ReLU(dtype=policy, name="relu")
        self.conv2 = Conv2Plus1D(filters, kernel_size, dtype=policy, name="conv2")
        self.norm2 = layers.LayerNormalization(dtype=policy, name="norm2")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        self.norm1.build(shape)
        self.conv2.build(shape)
        self.norm2.build(shape)

    def call(self, inputs):
        x = self.relu(self.norm1(self.conv1(inputs)))
        return self.norm2(self.conv2(x))

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Project(keras.layers.Layer):
    """The tutorial's projection shortcut: a Dense over channels, then LayerNorm.

    Args:
        units: output channels.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = layers.Dense(units, dtype=self.dtype_policy, name="dense")
        self.norm = layers.LayerNormalization(dtype=self.dtype_policy, name="norm")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.norm.build(self.dense.compute_output_shape(input_shape))

    def call(self, inputs):
        return self.norm(self.dense(inputs))

    def compute_output_shape(self, input_shape):
        return self.dense.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomFlipClips(keras.layers.Layer):
    """Mirrors each clip `[b, t, h, w, c]` left-right with probability 1/2; training only.

    Keras's advice for cheap augmentation: put it in the model, where it runs on
    the accelerator beside the convolutions, instead of spending input-pipeline
    CPU on it, which the JPEG decodes need. Every frame of a clip flips
    together. Inactive at inference.

    Args:
        seed: seed of the flips, or None to draw from Keras's global seed.
            Defaults to None.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, clips, training=None):
        if not training:
            return clips
        coin = keras.random.uniform((ops.shape(clips)[0], 1, 1, 1, 1),
                                    seed=self.seed_generator)
        return ops.where(coin < 0.5, ops.flip(clips, axis=3), clips)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResizeVideo(keras.layers.Layer):
    """Resizes every frame of a video `[b, t, h, w, c]` to `height` x `width`.

    Time is folded into the batch with einops, so a 2D resize does the work.

    Args:
        height: output frame height.
        width: output frame width.
    """

    def __init__(self, height, width, **kwargs):
        super().__init__(**kwargs)
        self.height = height
        self.width = width
        self.resizing = layers.Resizing(height, width, dtype=self.dtype_policy,
                                        name="resizing")

    def call(self, video):
        frames = einops.rearrange(video, "b t h w c -> (b t) h w c")
        frames = self.resizing(frames)
        return einops.rearrange(frames, "(b t) h w c -> b t h w c",
                                t=ops.shape(video)[1])

    def compute_output_shape(self, input_shape):
        b, t, _, _, c = input_shape
        return (b, t, self.height, self.width, c)

    def get_config(self):
        config = super().get_config()
        config.update(height=self.height, width=self.width)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock2Plus1D(keras.layers.Layer):
    """R(2+1)D's basic block: two (2+1)D convolutions with BatchNorm and a shortcut.

    The mid-channel count follows the paper, M = floor(t*d^2*N_in*N_out /
    (d^2*N_in + t*N_out)) with the block's input and output channels, and
    serves both of its (2+1)D convolutions, as in the reference R(2+1)D-18
    (31.5M parameters for 400 classes), so the block matches the 3D block it
    replaces.

    Args:
        filters: output channels.
        strides: stride in time and space of the first convolution and the
            shortcut. Defaults to 1.
        bn_momentum: BatchNorm momentum. Defaults to 0.9.
        bn_epsilon: BatchNorm epsilon; PyTorch's default is 1e-5. Defaults to 1e-3.
        mid_filters: mid channels of the two (2+1)D convolutions, a pair, or
            None for the paper's count. Converted checkpoints give theirs:
            some (IG-65M's R(2+1)D-34) differ from the formula. Defaults to None.
        padding: padding of the (2+1)D convolutions, `"same"` or
            `"symmetric"` (see `Conv2Plus1D`). Defaults to `"same"`.
    """

    def __init__(self, filters, strides=1, bn_momentum=0.9, bn_epsilon=1e-3,
                 mid_filters=None, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = _triple(strides)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.mid_filters = None if mid_filters is None else tuple(mid_filters)
        self.padding = padding

    def build(self, input_shape):
        in_channels = input_shape[-1]
        mids = self.mid_filters or (mid_channels(in_channels, self.filters),) * 2
        policy = self.dtype_policy
        bn = dict(momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=policy)
        conv = dict(mid_norm=True, use_bias=False, padding=self.padding,
                    bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon, dtype=policy)
        self.conv1 = Conv2Plus1D(self.filters, 3, strides=self.strides, mid_filters=mids[0],
                                 name="conv1", **conv)
        self.bn1 = layers.BatchNormalization(name="bn1", **bn)
        self.conv2 = Conv2Plus1D(self.filters, 3, mid_filters=mids[1], name="conv2", **conv)
        # Not zero-initialised (torchvision's default too): a zero gamma shuts the
        # residual branch at first, and a shallow net on a short run then learns
        # little beyond its projection shortcuts.
        self.bn2 = layers.BatchNormalization(name="bn2", **bn)
        self.relu = layers.ReLU(dtype=policy, name="relu")
        self.has_projection = self.strides != (1, 1, 1) or in_channels != self.filters
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        self.bn1.build(shape)
        self.conv2.build(shape)
        self.bn2.build(shape)
        if self.has_projection:
            self.shortcut = layers.Conv3D(self.filters, 1, strides=self.strides,
                                          use_bias=False, dtype=policy, name="shortcut")
            self.shortcut_bn = layers.BatchNormalization(name="shortcut_bn", **bn)
            self.shortcut.build(input_shape)
            self.shortcut_bn.build(shape)

    def call(self, inputs, training=None):
        x = self.relu(self.bn1(self.conv1(inputs, training=training), training=training))
        x = self.bn2(self.conv2(x, training=training), training=training)
        shortcut = inputs
        if self.has_projection:
            shortcut = self.shortcut_bn(self.shortcut(inputs), training=training)
        return self.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        b, t, h, w, _ = input_shape
        st, sh, sw = self.strides

        def down(size, stride):
            return None if size is None else -(-size // stride)
        return (b, down(t, st), down(h, sh), down(w, sw), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides,
                      bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                      mid_filters=self.mid_filters, padding=self.padding)
        return config


def mid_channels(in_channels, out_channels, t=3, d=3):
    """The paper's mid-channel count that matches a t x d x d 3D convolution's parameters."""
    return (t * d * d * in_channels * out_channels) // (d * d * in_channels + t * out_channels)
