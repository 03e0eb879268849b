"""Devices and mixed precision: what `auto` resolves to, and requests refused in one line."""

import keras
import pytest

from model.training import precision


@pytest.fixture(autouse=True)
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_auto_precision_is_float32_on_cpu():
    assert precision.set_precision("auto") == "float32"
    with pytest.raises(ValueError, match="unknown precision"):
        precision.set_precision("float8")


def test_set_precision_sets_keras_global_policy():
    assert precision.set_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.layers.Dense(2).compute_dtype == "bfloat16"


def test_float16_loss_scaling_is_refused_across_replicas():
    precision.check_precision("mixed_float16", 1)
    precision.check_precision("mixed_bfloat16", 2)
    with pytest.raises(precision.DeviceError, match="mixed_float16 cannot train on 2 replicas"):
        precision.set_precision("mixed_float16", replicas=2)
    assert keras.mixed_precision.global_policy().name == "float32"  # left as it was


def test_an_nvidia_driver_without_a_visible_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(precision, "nvidia_driver_present", lambda: True)
    monkeypatch.setattr(precision, "visible_gpus", lambda: [])  # as a CPU-only TensorFlow
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(precision.DeviceError, match=r"TensorFlow sees no GPU.*--allow_cpu"):
        precision.check_gpu_visible(allow_cpu=False)
    precision.check_gpu_visible(allow_cpu=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # GPUs hidden on purpose
    precision.check_gpu_visible(allow_cpu=False)


def test_a_cpu_machine_describes_its_devices():
    assert precision.describe_devices() == "CPU only"
