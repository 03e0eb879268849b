"""Mixed-precision policy: what `--precision auto` means on the device at hand.

`mixed_float16` on GPUs with tensor cores (compute capability 7.0 or more;
Keras wraps the optimizer in loss scaling), `mixed_bfloat16` on TPUs,
`float32` elsewhere. Under a mixed policy variables stay float32 and the
logits layer computes in float32.
"""

import keras
import tensorflow as tf

from model import PRECISIONS


def auto_precision():
    """The policy `auto` resolves to on this machine."""
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get(
            "compute_capability", (0, 0))
        if tuple(capability) >= (7, 0):
            return "mixed_float16"
    return "float32"


def set_precision(precision):
    """Sets Keras's global dtype policy; returns the resolved policy name."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of "
                         f"{', '.join(PRECISIONS)}")
    policy = auto_precision() if precision == "auto" else precision
    keras.mixed_precision.set_global_policy(policy)
    return policy
