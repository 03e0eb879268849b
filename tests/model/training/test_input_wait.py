"""The input wait: a probe at the end of the training pipeline and the callback that
turns its times into each epoch's share of step time spent waiting for input.

Real fits of a small Keras model on the CPU: one that waits for a slow
pipeline (a map that sleeps) and one whose pipeline keeps up.
"""

import csv
import math
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.training import input_wait, multi_worker
from model.training.input_wait import INPUT_BOUND_SHARE, Arrivals, InputWait

STEPS, EPOCHS = 8, 2
SLOW_SECONDS = 0.1  # a batch's extra time in the slow pipeline: many small steps' worth


def test_wait_share_counts_only_steps_that_began_before_their_batch():
    # Three steps of 10 s: the first batch was prefetched, the others came 2 and 5 s late.
    assert input_wait.wait_share([0, 10, 20], [-1, 12, 25], 30) == pytest.approx(7 / 30)
    assert input_wait.wait_share([0, 10], [-5, 3], 20) == 0.0
    assert input_wait.wait_share([], [], 1) is None


def test_the_callback_pairs_each_step_with_its_iterators_batch(monkeypatch):
    clock = iter([0.0, 1.0,               # the fit's first step: left out (tracing)
                  1.0, 2.0, 2.0, 3.0,     # epoch 1: two more steps
                  3.0, 4.0, 4.0, 5.0])    # epoch 2
    monkeypatch.setattr(input_wait.time, "perf_counter", lambda: next(clock))
    arrivals = Arrivals()
    # Batch 1 came half a step late; batches 3 and 4 were ready before epoch 2
    # began; batch 5, prefetched, belongs to the next.
    arrivals._times = {0: 0.5, 1: 1.5, 2: 1.9, 3: 2.5, 4: 2.9, 5: 9.0}
    wait, logs = InputWait(arrivals, stall_seconds=None), [{}, {}]  # no watch on this clock
    wait.on_train_begin()
    for epoch, steps in ((0, 3), (1, 2)):
        wait.on_epoch_begin(epoch)
        for step in range(steps):
            wait.on_train_batch_begin(step)
            wait.on_train_batch_end(step)
        wait.on_epoch_end(epoch, logs[epoch])
    assert logs[0]["input_wait"] == pytest.approx(0.5 / 2)   # steps from 1 s to 3 s
    assert logs[1]["input_wait"] == pytest.approx(0.0)
    assert wait.shares == [0.25, 0.0]
    assert arrivals._times == {5: 9.0}  # the next epoch's batch, kept for it


def test_a_new_iterator_starts_the_record_anew():
    """Keras's fit under a strategy takes a batch from an iterator of its own, then
    trains from a new one: the first one's batches never reach a step."""
    arrivals = Arrivals()
    for index in (0, 1, 2, 0, 1):
        arrivals.record(np.int64(index))
    assert sorted(arrivals._times) == [0, 1]
    assert arrivals.at(2) is None


def test_the_probe_passes_elements_unchanged_and_notes_each_one():
    arrivals = Arrivals()
    dataset = arrivals.probe(tf.data.Dataset.range(5).map(lambda i: (i, 2 * i)))
    before = time.perf_counter()
    assert [(int(a), int(b)) for a, b in dataset] == [(i, 2 * i) for i in range(5)]
    times = [arrivals.at(index) for index in range(5)]
    assert before <= times[0] <= times[-1] <= time.perf_counter()
    assert times == sorted(times)
    assert dataset.element_spec == (tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64))


def _batches(arrivals, sleep):
    """Training batches that repeat, each `sleep` seconds in the making, probed last."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 512)).astype("float32")
    y = np.eye(2, dtype="float32")[np.arange(128) % 2]
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    if sleep:
        def slow(clips, labels):
            slept = tf.numpy_function(lambda: np.float32(time.sleep(sleep) or 0), [],
                                      tf.float32)
            with tf.control_dependencies([slept]):
                return tf.identity(clips), labels
        dataset = dataset.map(slow)
    return arrivals.probe(dataset.prefetch(2))


def _network(width):
    # Width 2048: steps of some 30 ms on 2 cores (batches of 128), so that the
    # ~0.7 ms a step takes to ask for a ready batch, which counts as waiting,
    # stays a few percent. Width 8: steps of a millisecond or two, which a slow
    # pipeline keeps waiting however busy the cores are.
    network = keras.Sequential([keras.Input((512,)), keras.layers.Dense(width, "relu"),
                                keras.layers.Dense(width, "relu"), keras.layers.Dense(2)])
    network.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))
    return network


def _fit(tmp_path, sleep, width):
    """Keras's fit under a strategy, as train.py runs it: it first takes a batch from
    an iterator of its own, to build the model."""
    arrivals, stalls = Arrivals(), []
    wait = InputWait(arrivals, stall_seconds=30, report=stalls.append)
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        network = _network(width)
    history = network.fit(_batches(arrivals, sleep), epochs=EPOCHS, steps_per_epoch=STEPS,
                             callbacks=[wait, keras.callbacks.CSVLogger(tmp_path / "h.csv")],
                             shuffle=False, verbose=0)
    with open(tmp_path / "h.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["input_wait"]) for row in rows] == pytest.approx(wait.shares, abs=1e-4)
    assert history.history["input_wait"] == pytest.approx(wait.shares, abs=1e-4)
    assert stalls == []  # slow or not, every batch comes well within a stall's time
    return wait.shares


def test_a_fit_that_waits_for_a_slow_pipeline_has_a_high_share(tmp_path):
    shares = _fit(tmp_path, SLOW_SECONDS, width=8)
    assert min(shares) > 0.5, shares
    facts = input_wait.facts(shares)
    assert facts["input_wait"] > INPUT_BOUND_SHARE
    assert "--samples_per_video 2" in input_wait.input_bound_advice(facts)


def test_a_fit_whose_pipeline_keeps_up_has_a_low_share(tmp_path):
    shares = _fit(tmp_path, 0, width=2048)
    assert max(shares) < INPUT_BOUND_SHARE / 2, shares
    assert input_wait.input_bound_advice(input_wait.facts(shares)) is None


def test_our_multi_worker_loop_reports_the_share_in_its_epoch_line():
    """`CustomLoop` (across machines) calls the callbacks itself; its epoch line shows
    what they added."""
    arrivals, lines = Arrivals(), []
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        network = _network(width=8)
    batches = strategy.distribute_datasets_from_function(
        lambda context: _batches(arrivals, SLOW_SECONDS))
    wait = InputWait(arrivals)
    callbacks = keras.callbacks.CallbackList([wait], add_history=True, model=network)
    multi_worker.CustomLoop(network, strategy).fit(
        batches, epochs=EPOCHS, steps=STEPS, initial_epoch=0, callbacks=callbacks,
        report=lines.append)
    assert min(wait.shares) > 0.5, wait.shares
    assert all(f"input_wait {share:.4f}" in line for share, line in zip(wait.shares, lines))


def test_a_step_whose_batch_does_not_come_is_said_as_it_waits():
    """The first batch takes 2.5 s, the fifth 4.5 s; with a stall time of 1 s the first step
    is said at 2 s (it also compiles: twice the time), the fifth at 1, 2 and 4 s."""
    arrivals, stalls = Arrivals(), []
    delays = {0: 2.5, 4: 4.5}

    def stall_twice(index, batch):
        slept = tf.numpy_function(lambda i: np.float32(time.sleep(delays.get(int(i), 0)) or 0),
                                  [index], tf.float32)
        with tf.control_dependencies([slept]):
            return tf.nest.map_structure(tf.identity, batch)

    batches = tf.data.Dataset.zip(tf.data.Dataset.range(10**6),
                                  _batches(Arrivals(), sleep=0)).map(stall_twice)
    network = _network(width=8)
    with InputWait(arrivals, data_service="grpc://hostB:5050", stall_seconds=1,
                   report=stalls.append) as wait:
        network.fit(arrivals.probe(batches), epochs=1, steps_per_epoch=STEPS,
                    callbacks=[wait], shuffle=False, verbose=0)
    assert wait._watch is None  # the fit's end ended the watch
    first = [line for line in stalls if "the first step of this launch" in line]
    fifth = [line for line in stalls if line.startswith("train: step 5 of this launch")]
    # A busy machine may add a line to the first (compiling), or drop the fifth's last.
    assert 1 <= len(first) <= 2 and 2 <= len(fifth) <= 3, stalls
    assert first[0].startswith("train: the first step of this launch has waited 2 s for "
                               "its batch (and to build and compile) from the tf.data "
                               "service at grpc://hostB:5050; are its workers running? "
                               "Start one with python -m model.training.data_service worker "
                               "--dispatcher hostB:5050 --port PORT"), stalls
    assert input_wait.stall_line(6, 61.2) == (
        "train: step 7 of this launch has waited 61 s for its batch; the reader is stalled: "
        "is the file system of --records still answering?")


def test_facts_and_advice():
    assert input_wait.facts([0.3, None, 0.5]) == {"input_wait_per_epoch": [0.3, None, 0.5],
                                                  "input_wait": 0.4}
    assert input_wait.facts([None])["input_wait"] is None
    assert input_wait.input_bound_advice({"input_wait": INPUT_BOUND_SHARE}) is None
    advice = input_wait.input_bound_advice({"input_wait": 0.45})
    assert advice.startswith("input-bound: training waited for its input 45%")
    assert "--data_service" in advice and "--fps" in advice
    served = input_wait.input_bound_advice({"input_wait": 0.45}, "grpc://host:5050")
    assert "more workers" in served
    assert math.isnan(_logged_share_of_an_unmeasured_epoch())


def _logged_share_of_an_unmeasured_epoch():
    wait, logs = InputWait(Arrivals()), {}
    wait.on_epoch_begin(0)
    wait.on_train_batch_begin(0)
    wait.on_train_batch_end(0)
    wait.on_epoch_end(0, logs)  # one step, the fit's first: nothing measured
    return logs["input_wait"]
