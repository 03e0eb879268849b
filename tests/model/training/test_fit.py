"""The fit's plan (steps, precise BatchNorm's batches), its strategy and its numbers."""

import keras
import numpy as np

from model.training import fit, input_wait
from model.training.config import resolve_config


def _plan(train_videos=56, global_batch=8, **settings):
    argv = ["--records", "r", "--output_dir", "o"]
    for key, value in settings.items():
        argv += [f"--{key}", str(value)]
    return fit.Plan(resolve_config(argv), None, None, None, "val", 2, global_batch, 0,
                    train_videos)


def test_steps_are_one_pass_unless_asked_and_statistics_at_most_one_pass():
    assert _plan().steps_per_pass == 7 and _plan().steps == 7
    assert _plan(train_videos=57).steps_per_pass == 8  # a last, partial batch counts
    assert _plan(samples_per_video=2).steps_per_pass == 14  # each video gives two clips
    assert _plan(steps_per_epoch=3).steps == 3
    assert _plan().bn_batches == 7  # 200 asked, but one pass is all there is
    assert _plan(precise_bn_batches=5).bn_batches == 5


def test_one_machine_strategies_and_numerics():
    config = resolve_config(["--records", "r", "--output_dir", "o", "--strategy",
                             "one_device", "--seed", "4"])
    strategy = fit.make_strategy(config, None)
    assert strategy.num_replicas_in_sync == 1
    try:
        assert fit.set_numerics(config, 1) == "float32"  # auto, on a CPU
        first = np.random.rand(3)
        fit.set_numerics(config, 1)
        np.testing.assert_array_equal(np.random.rand(3), first)  # the seed is set again
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_facts_of_a_fit_say_what_it_ran():
    class Precise:
        seconds = [0.123, 0.456]

    class Wait:
        shares = [0.1, 0.3]

    facts = fit.fit_facts(2, 10.0, Precise(), Wait())
    assert facts["epochs_this_run"] == 2 and facts["seconds_per_epoch"] == 5.0
    assert facts["precise_bn_seconds"] == [0.12, 0.46]
    assert facts == {**facts, **input_wait.facts([0.1, 0.3])}  # and the input's wait
