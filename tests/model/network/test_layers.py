"""The (2+1)D layers: config round trips, `.keras` reloads, and flips of whole clips."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO, random_clips
from model.network import layers as video_layers
from model.network.build import build_model


pytestmark = pytest.mark.usefixtures("float32_policy")


LAYERS = [
    (video_layers.Conv2Plus1D, dict(filters=8, kernel_size=(3, 5, 5), strides=(2, 2, 2),
                                    mid_filters=12, mid_norm=True, use_bias=False)),
    (video_layers.ResidualMain, dict(filters=8, kernel_size=3)),
    (video_layers.Project, dict(units=6)),
    (video_layers.ResizeVideo, dict(height=8, width=12)),
    (video_layers.ResidualBlock2Plus1D, dict(filters=16, strides=2)),
    (video_layers.RandomFlipClips, dict(seed=3)),
]


def _inputs():
    return np.random.default_rng(0).normal(size=(2, 4, 16, 16, 8)).astype("float32")


@pytest.mark.parametrize("cls,kwargs", LAYERS, ids=[c.__name__ for c, _ in LAYERS])
def test_layer_config_round_trip(cls, kwargs):
    layer = cls(**kwargs, name="probe")
    inputs = _inputs()
    outputs = layer(inputs)
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    for key, value in kwargs.items():
        expected = tuple(value) if isinstance(value, (list, tuple)) else value
        got = layer.get_config()[key]
        assert (tuple(got) if isinstance(got, (list, tuple)) else got) == (
            expected if not isinstance(value, int) or key not in ("kernel_size", "strides")
            else (value,) * 3)
    assert tuple(clone(inputs).shape) == tuple(outputs.shape)
    assert tuple(layer.compute_output_shape(inputs.shape)) == tuple(outputs.shape)


@pytest.mark.parametrize("cls,kwargs", LAYERS, ids=[c.__name__ for c, _ in LAYERS])
def test_a_keras_file_of_each_layer_reloads_with_identical_outputs(cls, kwargs, tmp_path):
    inputs = keras.Input((4, 16, 16, 8))
    model = keras.Model(inputs, cls(**kwargs, name="probe")(inputs))
    model.save(tmp_path / "layer.keras")
    # Registered with Keras: no custom_objects, and safe mode stays on.
    reloaded = keras.saving.load_model(tmp_path / "layer.keras", safe_mode=True)
    assert type(reloaded.get_layer("probe")) is cls
    np.testing.assert_array_equal(np.asarray(reloaded(_inputs())),
                                  np.asarray(model(_inputs())))


def test_random_flip_mirrors_whole_clips_in_training_only():
    clips = random_clips(64, 3, 8)
    layer = video_layers.RandomFlipClips(seed=1)
    np.testing.assert_array_equal(np.asarray(layer(clips, training=False)), clips)
    out = np.asarray(layer(clips, training=True))
    assert out.dtype == np.uint8
    mirrored = [np.array_equal(o, c[:, :, ::-1]) for o, c in zip(out, clips)]
    kept = [np.array_equal(o, c) for o, c in zip(out, clips)]
    assert all(m != k for m, k in zip(mirrored, kept))  # every frame of a clip alike
    assert 16 < sum(mirrored) < 48


def test_mid_channels_follow_the_papers_parameter_budget():
    # R(2+1)D keeps a 3x3x3 convolution's parameters: t*d*d*N_in*N_out / (d*d*N_in + t*N_out).
    assert video_layers.mid_channels(64, 64) == 144
    assert video_layers.mid_channels(64, 128) == 230
    assert video_layers.mid_channels(3, 64, t=3, d=7) == 83


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tutorial", "r2plus1d_10"])
def test_keras_file_reloads_in_a_fresh_process(name, tmp_path):
    options = {} if name == "tutorial" else {"width_multiplier": 0.25}
    model = build_model(name, 5, 8, 32, flip=True, **options)
    clips = random_clips(2, 8, 32)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(clips, np.array([0, 1]), epochs=1, verbose=0)  # move BatchNorm statistics
    expected = model.predict(clips, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.save(tmp_path / "clips.npy", clips)
    code = (
        "import sys, numpy as np, keras, model.network.layers\n"
        f"m = keras.saving.load_model(r'{path}', safe_mode=True)\n"
        f"np.save(r'{tmp_path / 'out.npy'}', m.predict(np.load(r'{tmp_path / 'clips.npy'}'),"
        " verbose=0))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
