"""Devices and mixed precision: what `--precision auto` means on the machine at hand.

`auto` is `mixed_bfloat16` on GPUs of compute capability 8.0 or more and on
TPUs, `mixed_float16` on older tensor-core GPUs (7.x), `float32` on CPUs.
Under a mixed policy variables stay float32 and the logits layer computes in
float32.
"""

import os

import keras
import tensorflow as tf

from model import PRECISIONS, nvidia_driver_present
from preprocess.errors import UserError


class DeviceError(UserError):
    """A device or precision request this machine or strategy cannot honour."""


def visible_gpus():
    """The GPUs TensorFlow can use."""
    return tf.config.list_physical_devices("GPU")


def check_gpu_visible(allow_cpu):
    """Stops when the machine has an NVIDIA GPU but TensorFlow lists none.

    A `tensorflow` without CUDA sees no GPU and would quietly train in float32
    on the CPU, many times slower. GPUs hidden on purpose (`CUDA_VISIBLE_DEVICES`
    empty or -1) are a choice, not a mistake.
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
    if allow_cpu or hidden or visible_gpus() or not nvidia_driver_present():
        return
    raise DeviceError("this machine has an NVIDIA driver but TensorFlow sees no GPU; "
                      "install TensorFlow with CUDA (pip install -e .[gpu]), or pass "
                      "--allow_cpu to train on the CPU anyway")


def auto_precision(replicas=1):
    """The policy `auto` resolves to on this machine, for `replicas` replicas in sync."""
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"
    capability = tuple(tf.config.experimental.get_device_details(gpus[0]).get(
        "compute_capability", (0, 0)))
    # bfloat16 has float32's exponent range, so it needs no loss scaling, and
    # Ampere (8.0) and later run it at float16's speed; older tensor cores
    # have float16 only, whose loss scaling this trainer runs on one replica.
    if capability >= (8, 0):
        return "mixed_bfloat16"
    if capability >= (7, 0) and replicas == 1:
        return "mixed_float16"
    return "float32"


def check_precision(policy, replicas):
    """Refuses float16 loss scaling across replicas, which Keras does not keep in step.

    Keras's `LossScaleOptimizer` decides on each replica's own gradients
    whether to skip a step, so replicas (and workers) that disagree would
    drift apart or wait on each other's all-reduce; with XLA it also fails
    outright (keras-team/keras#21366, #20763).
    """
    if policy == "mixed_float16" and replicas > 1:
        raise DeviceError(f"mixed_float16 cannot train on {replicas} replicas here: loss "
                          "scaling may skip a step on one replica and not another; use "
                          "--precision mixed_bfloat16 (compute capability 8.0 or more) or "
                          "float32, or one GPU")


def set_precision(precision, replicas=1):
    """Sets Keras's global dtype policy; returns the resolved policy name."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of "
                         f"{', '.join(PRECISIONS)}")
    policy = auto_precision(replicas) if precision == "auto" else precision
    check_precision(policy, replicas)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def describe_devices():
    """The devices TensorFlow will use, for the log: e.g. `2 GPU (NVIDIA A100...)`."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU only"
    names = {tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
             for gpu in gpus}
    return f"{len(gpus)} GPU ({', '.join(sorted(names))})"
