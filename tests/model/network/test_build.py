"""`build_model`: each name builds its network with the options given, and misuse is refused."""

import keras
import pytest

from model.network import MODEL_NAMES, R2PLUS1D_STAGES
from model.network import layers as video_layers
from model.network.build import build_model


@pytest.fixture(autouse=True)
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_name_builds_its_network(name):
    options = {} if name == "tutorial" else {"width_multiplier": 0.25}
    model = build_model(name, 7, 8, 32, flip=True, **options)
    assert model.name == name and model.output_shape == (None, 7)
    assert model.input_shape == (None, 8, 32, 32, 3)
    assert "random_flip" in [layer.name for layer in model.layers]
    blocks = [layer for layer in model.layers
              if isinstance(layer, video_layers.ResidualBlock2Plus1D)]
    assert len(blocks) == (sum(R2PLUS1D_STAGES[name]) if name in R2PLUS1D_STAGES else 0)
    if name != "tutorial":
        assert model.get_layer("stage4_block1").filters == 128  # 512 at a quarter width


def test_r2plus1d_options_reach_the_network():
    model = build_model("r2plus1d_10", 3, width_multiplier=0.25, dropout=0.5, bn_epsilon=1e-5)
    assert model.input_shape == (None, None, None, None, 3)  # sizes left free
    assert model.get_layer("dropout").rate == 0.5
    assert model.get_layer("stage1_block1").bn1.epsilon == 1e-5
    assert "random_flip" not in [layer.name for layer in model.layers]


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'r3d'"):
        build_model("r3d", 10)


def test_the_tutorial_takes_neither_weights_nor_options():
    with pytest.raises(ValueError, match="no published weights fit the tutorial model"):
        build_model("tutorial", 10, 8, 32, weights="kinetics400")
    with pytest.raises(ValueError, match=r"takes no options, got \['width_multiplier'\]"):
        build_model("tutorial", 10, 8, 32, width_multiplier=0.5)
