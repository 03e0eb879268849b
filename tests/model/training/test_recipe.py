"""The training recipe: schedules, optimizers, steps, and callbacks that keep a run's best."""

import math

import keras
import numpy as np
import pytest

from model.training import recipe
from model.training.run_dir import RunDir


def test_a_resumed_run_keeps_its_best_checkpoint_so_far(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "history.csv").write_text(
        "epoch,loss,val_accuracy\n0,1.0,0.5\n1,0.8,0.9\n2,0.7,0.7\n")
    best = [c for c in recipe.make_callbacks(run)
            if isinstance(c, keras.callbacks.ModelCheckpoint)
            and c.filepath == run.best_checkpoint]
    assert len(best) == 1 and best[0].best == 0.9  # epoch 4 must beat 0.9 to be saved
    assert recipe.best_so_far(str(tmp_path / "missing.csv")) is None


def test_steps_cover_every_video():
    assert [recipe.steps_for(n, 8) for n in (0, 1, 8, 9, 56)] == [1, 1, 1, 2, 7]


def test_cosine_schedule_warms_up_then_decays_to_zero():
    assert recipe.learning_rate(0.1, "constant", 10, 5, 2) == 0.1
    schedule = recipe.learning_rate(0.1, "cosine", epochs=10, steps_per_epoch=5,
                                    warmup_epochs=2)
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(0.05)  # linear warm-up over 10 steps
    assert rates[2] == pytest.approx(0.1)  # the peak, then cosine over the other 40
    assert rates[3] == pytest.approx(0.1 * (1 + math.cos(math.pi / 2)) / 2)
    assert rates[4] == pytest.approx(0.0, abs=1e-7)
    no_warmup = recipe.learning_rate(0.1, "cosine", 10, 5, 0)
    assert float(no_warmup(0)) == pytest.approx(0.1)


def test_optimizers_by_name():
    assert type(recipe.make_optimizer("adam", 1e-3)) is keras.optimizers.Adam
    assert type(recipe.make_optimizer("adam", 1e-3, weight_decay=0.05)) is keras.optimizers.AdamW
    sgd = recipe.make_optimizer("sgd", 0.1, weight_decay=1e-4)
    assert sgd.nesterov and sgd.momentum == 0.9 and sgd.weight_decay == 1e-4
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        recipe.make_optimizer("rmsprop", 0.1)


def test_a_non_finite_loss_stops_training_before_any_checkpoint():
    stop = recipe.StopOnNaN()
    stop.on_epoch_begin(2)
    stop.on_train_batch_end(0, {"loss": 0.5})
    with pytest.raises(recipe.NaNLossError, match="the loss became nan in epoch 3"):
        stop.on_train_batch_end(1, {"loss": np.float32("nan")})
    with pytest.raises(recipe.NaNLossError, match="inf"):
        stop.on_train_batch_end(2, {"loss": float("inf")})


def test_compiled_models_report_accuracy_and_top_k():
    inputs = keras.Input((4,))
    network = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    recipe.compile_model(network, optimizer="sgd", learning_rate=0.1, weight_decay=0.0,
                         label_smoothing=0.1, jit_compile=False)
    logs = network.evaluate(np.zeros((2, 4), np.float32), np.eye(3)[[0, 1]], verbose=0,
                            return_dict=True)
    assert {"loss", "accuracy", "top5_accuracy"} <= set(logs)
    assert network.loss.label_smoothing == 0.1


def test_multi_worker_is_not_a_strategy_of_the_recipe():
    with pytest.raises(recipe.UnsupportedStrategyError, match="model.training.multi_worker"):
        recipe.make_strategy("multi_worker")
    with pytest.raises(ValueError, match="unknown strategy 'many'"):
        recipe.make_strategy("many")
