"""twoplusone's models: Keras 3 (2+1)D ResNets chosen by name.

    from model import build_model
    model = build_model("r2plus1d_18", num_classes=101, num_frames=16, image_size=112)
"""

from model import resnets

MODEL_NAMES = ("tutorial", *resnets.R2PLUS1D_STAGES)


def build_model(name, num_classes, num_frames=None, image_size=None, flip=False, **options):
    """Builds a model by name: `tutorial`, `r2plus1d_10`, `r2plus1d_18` or `r2plus1d_34`.

    Args:
        name: which network.
        num_classes: number of output logits.
        num_frames: clip length (None leaves it free where the network allows).
        image_size: frame side (the tutorial's network needs it).
        flip: random horizontal flips in training, as the model's first layer,
            so they run on the accelerator. Defaults to False.
        **options: `width_multiplier`, `dropout`, `bn_momentum` for the R(2+1)D
            networks.

    Returns:
        A `keras.Model` from uint8 clips `[batch, frames, size, size, 3]` to
        float32 logits `[batch, num_classes]`, built under the current dtype policy.
    """
    if name == "tutorial":
        if options:
            raise ValueError(f"the tutorial model takes no options, got {sorted(options)}")
        return resnets.tutorial(num_classes, num_frames=num_frames, image_size=image_size,
                                flip=flip)
    if name in resnets.R2PLUS1D_STAGES:
        return resnets.r2plus1d(num_classes, resnets.R2PLUS1D_STAGES[name],
                                num_frames=num_frames, image_size=image_size,
                                flip=flip, name=name, **options)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
