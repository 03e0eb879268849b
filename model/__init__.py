"""twoplusone's models: Keras 3 (2+1)D ResNets chosen by name, and how they train.

    from model import build_model
    model = build_model("r2plus1d_18", num_classes=101, num_frames=16, image_size=112)
    model = build_model("r2plus1d_18", 101, 16, 112, weights="kinetics400")

Importing this package is light (no TensorFlow): it names the choices a user
makes, so a command line can be checked before TensorFlow loads. The
networks live in `model.resnets` and `model.layers` (import `model.layers`
before `keras.saving.load_model` reads a model of ours: it registers our
layers with Keras, and loads TensorFlow), published weights in
`model.weights`, training parts in `model.training`, the run folder in
`model.run_dir`.
"""

import os
import shutil

# Blocks per stage of the paper's depths.
R2PLUS1D_STAGES = {
    "r2plus1d_10": (1, 1, 1, 1),
    "r2plus1d_18": (2, 2, 2, 2),
    "r2plus1d_34": (3, 4, 6, 3),
}
MODEL_NAMES = ("tutorial", *R2PLUS1D_STAGES)
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")

# The metrics every trainer, loop and report names: the one home of their names.
ACCURACY = "accuracy"
TOP_K_ACCURACY = "top5_accuracy"
VAL_ACCURACY = "val_" + ACCURACY
VAL_TOP_K_ACCURACY = "val_" + TOP_K_ACCURACY


def nvidia_driver_present():
    """Whether this machine has an NVIDIA driver, whatever TensorFlow sees (no TensorFlow)."""
    return bool(shutil.which("nvidia-smi")) or os.path.exists("/proc/driver/nvidia")


def quiet_tensorflow_logs():
    """Hides TensorFlow's C++ notices and warnings; call before TensorFlow loads.

    On a machine without an NVIDIA driver its errors too: there TensorFlow's
    CUDA probe logs "failed call to cuInit" as an error on every start, and
    the real errors of a CPU run reach Python as exceptions anyway. A
    TF_CPP_MIN_LOG_LEVEL already set wins.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if nvidia_driver_present() else "3")


def top_k(num_classes):
    """The k of the top-k accuracy: 5, or every class when there are fewer."""
    return min(5, num_classes)


def build_model(name, num_classes, num_frames=None, image_size=None, flip=False,
                weights=None, **options):
    """Builds a model by name: `tutorial`, `r2plus1d_10`, `r2plus1d_18` or `r2plus1d_34`.

    Args:
        name: which network.
        num_classes: number of output logits.
        num_frames: clip length (None leaves it free where the network allows).
        image_size: frame side (the tutorial's network needs it).
        flip: random horizontal flips in training, as the model's first layer,
            so they run on the accelerator. Defaults to False.
        weights: as keras.applications' `weights=`: a name of
            `model.weights.NAMED_WEIGHTS` (`"kinetics400"`, `"ig65m_kinetics400"`,
            ...: downloaded once into Keras's cache and checked against its
            published hash), or the path of a torchvision-layout R(2+1)D
            checkpoint (`.pth`, read without PyTorch); None for fresh
            weights. The channel counts, BatchNorm epsilon and input
            normalisation come with the weights; the classifier is kept when
            `num_classes` matches theirs. Defaults to None.
        **options: `width_multiplier`, `dropout`, `bn_momentum`, `bn_epsilon`
            for the R(2+1)D networks (with `weights`, `bn_epsilon` overrides
            the weights' own: 1e-3 for IG-65M's, else PyTorch's 1e-5).

    Returns:
        A `keras.Model` from uint8 clips `[batch, frames, size, size, 3]` to
        float32 logits `[batch, num_classes]`, built under the current dtype policy.
    """
    from model import resnets
    if name == "tutorial":
        if weights is not None:
            raise ValueError("no published weights fit the tutorial model; train it from "
                             "scratch or choose an r2plus1d model")
        if options:
            raise ValueError(f"the tutorial model takes no options, got {sorted(options)}")
        return resnets.tutorial(num_classes, num_frames=num_frames, image_size=image_size,
                                flip=flip)
    if name in R2PLUS1D_STAGES and weights is not None:
        from model import pretrained
        return pretrained.build_from_torchvision(name, num_classes, num_frames, image_size,
                                                 weights, flip=flip, **options)
    if name in R2PLUS1D_STAGES:
        return resnets.r2plus1d(num_classes, R2PLUS1D_STAGES[name],
                                num_frames=num_frames, image_size=image_size,
                                flip=flip, name=name, **options)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
