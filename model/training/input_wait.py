"""How long training waits for its input: each epoch's share of step time spent waiting
for the next batch, as PySlowFast logs its data time beside its iteration time.

A probe, the last stage of the training dataset (`Arrivals.probe`), notes when
each batch leaves the pipeline; `InputWait`, the first Keras callback, notes
when each step begins and ends. A step that began before its batch existed
waited for it: the epoch's share is the sum of those waits over the time its
steps took, in the epoch's logs (`history.csv`, TensorBoard, the epoch line)
and in `metrics.json`; `input_bound_advice` turns a high mean into one line of
advice. While a fit runs, a step whose batch does not come for
`STALL_SECONDS` (a tf.data service whose workers are all gone, records on a
file system that stopped answering) is said at once, and again as the wait
doubles; the first step, which also builds and compiles, gets twice as long.
"""

import math
import threading
import time

import keras

LOG_KEY = "input_wait"
# A step that waits for its batch a fifth of the time could train 25% faster
# with enough input (1 / 0.8): enough to act on. Below that, what waiting
# remains is the ordinary jitter of a pipeline that keeps up.
INPUT_BOUND_SHARE = 0.2
# A pipeline that keeps up hands over a batch in well under a second; a minute
# without one is a stall, even for the largest clips on the slowest storage.
STALL_SECONDS = 60


class Arrivals:
    """When each batch of the training pipeline's iterator left it, by its index there.

    A fit's k-th step takes its iterator's k-th batch, however far the
    iterator has prefetched, so the index pairs steps and batches. A new
    iterator starts again at index 0 and starts the record anew: Keras's `fit`
    under a strategy first takes a batch from an iterator of its own to build
    the model, drops that iterator and trains from a new one. The pipeline's
    thread records while the callback reads: a lock keeps them apart.
    """

    def __init__(self):
        self._times = {}
        self._lock = threading.Lock()

    def record(self, index):
        now = time.perf_counter()
        with self._lock:
            if index == 0:  # a new iterator: earlier ones' batches never reach a step
                self._times = {}
            self._times[int(index)] = now
        return math.nan  # numpy_function wants a value; nothing reads it

    def at(self, index):
        """When the batch of `index` left, or None if it has not (yet)."""
        with self._lock:
            return self._times.get(index)

    def forget(self, below):
        """Drops the times of batches before `below`, which no step will ask for again."""
        with self._lock:
            self._times = {k: v for k, v in self._times.items() if k >= below}

    def probe(self, dataset):
        """`dataset`, its elements unchanged, with each one's departure recorded.

        A sequential map (no `num_parallel_calls`) runs inside the consumer's
        `GetNext`, so the time is when the batch was handed over, whatever
        the stages before prefetched. tf.data would otherwise add a prefetch
        after a synchronous last stage (`inject_prefetch`), which would move
        that moment back into a buffer: it is turned off here. The counter
        numbers the batches of each iterator from 0.
        """
        import tensorflow as tf

        def stamp(element, index):
            noted = tf.numpy_function(self.record, [index], tf.float64, stateful=True)
            with tf.control_dependencies([noted]):  # noted before it is handed over
                return tf.nest.map_structure(tf.identity, element)

        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False
        numbered = tf.data.Dataset.zip(dataset, tf.data.Dataset.counter())
        return numbered.map(stamp).with_options(options)


def wait_share(begins, arrivals, end):
    """The share of `[begins[0], end]` that steps spent waiting for their batch.

    Args:
        begins: when each step began, in order.
        arrivals: when each step's batch left the pipeline, in the same order;
            a batch that arrived before its step began (prefetched) cost no wait.
        end: when the last step ended.

    Returns:
        A share in [0, 1], or None without a step.
    """
    if not begins or not arrivals or end <= begins[0]:
        return None
    waited = sum(max(0.0, arrived - began) for began, arrived in zip(begins, arrivals))
    return min(1.0, waited / (end - begins[0]))


class InputWait(keras.callbacks.Callback):
    """Puts each epoch's share of step time spent waiting for input into its logs.

    First in the callback list, so that its times leave out the other
    callbacks' work and the callbacks after it (CSV history, TensorBoard,
    the epoch line) record `logs["input_wait"]`. The k-th step of a fit takes
    the batches of its iterator from `k * batches_per_step` on, and starts once
    the last of them is in. The first step of a fit is left out: it also
    traces and compiles the step. The time a step takes to ask for its batch
    (under a millisecond) counts as waiting: nothing beside real steps of
    tenths of a second.

    Used as a context manager around the fit, it watches for stalls from
    the fit's start, which under a strategy first takes a batch to build the
    model, until its end, however it ends.

    Args:
        arrivals: the `Arrivals` whose probe ends the training dataset.
        batches_per_step: batches of that pipeline each step takes (one per
            local replica across machines, one global batch with `fit`).
            Defaults to 1.
        data_service: the `--data_service` address the batches come from,
            named in what a stall says. Defaults to None: the local reader.
        stall_seconds: how long a step waits before it is said;
            None watches nothing. Defaults to `STALL_SECONDS`.
        report: what says it. Defaults to printing a line.
    """

    def __init__(self, arrivals, batches_per_step=1, *, data_service=None,
                 stall_seconds=STALL_SECONDS, report=None):
        super().__init__()
        self.arrivals = arrivals
        self.batches_per_step = batches_per_step
        self.data_service = data_service
        self.stall_seconds = stall_seconds
        self.report = report or (lambda line: print(line, flush=True))
        self.shares = []        # each epoch's share in this fit; None where unmeasured
        self._steps = 0         # steps of this fit so far: its iterator's batches
        self._waiting = None    # (step of the fit, when it began) while a step runs
        self._stop = threading.Event()
        self._watch = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def start(self):
        """Starts the stall watch, the fit's first batch awaited from now."""
        if self._watch is None and self.stall_seconds is not None:
            # A thread: TensorFlow waits for a batch outside Python, holding no lock.
            self._waiting = (0, time.perf_counter())
            self._stop.clear()
            self._watch = threading.Thread(target=self._watch_for_stalls, daemon=True,
                                           name="input-stall-watch")
            self._watch.start()

    def close(self):
        """Ends the stall watch; a fit that raised does not reach `on_train_end`."""
        self._stop.set()
        if self._watch is not None:
            self._watch.join()
            self._watch = None

    def on_train_begin(self, logs=None):
        self._steps = 0
        self.start()

    def on_train_end(self, logs=None):
        self.close()

    def on_epoch_begin(self, epoch, logs=None):
        self._begins, self._end = [], None

    def on_train_batch_begin(self, batch, logs=None):
        self._begins.append(time.perf_counter())
        self._waiting = (self._steps + len(self._begins) - 1, self._begins[-1])

    def on_train_batch_end(self, batch, logs=None):
        self._end = time.perf_counter()
        self._waiting = None

    def _watch_for_stalls(self):
        said = None  # the step last reported, and how long it had waited
        while not self._stop.wait(min(1.0, self.stall_seconds / 4)):
            waiting = self._waiting
            if waiting is None:
                continue
            step, began = waiting
            waited = time.perf_counter() - began
            arrived = self.arrivals.at((step + 1) * self.batches_per_step - 1)
            first = (2 if step == 0 else 1) * self.stall_seconds  # step 0 also compiles
            due = first if said is None or said[0] != step else 2 * said[1]
            if arrived is None and waited >= due:
                self.report(stall_line(step, waited, self.data_service))
                said = (step, waited)

    def on_epoch_end(self, epoch, logs=None):
        per_step, first = self.batches_per_step, self._steps
        measured = [(began, self.arrivals.at((step + 1) * per_step - 1))
                    for step, began in enumerate(self._begins, start=first)
                    if step > 0]  # the fit's first step traced and compiled the step too
        measured = [(began, arrived) for began, arrived in measured if arrived is not None]
        self._steps += len(self._begins)
        self.arrivals.forget(self._steps * per_step)
        share = wait_share([b for b, _ in measured], [a for _, a in measured], self._end)
        self.shares.append(None if share is None else round(share, 4))
        if logs is not None:  # NaN, not missing: the CSV keeps one set of columns
            logs[LOG_KEY] = math.nan if share is None else share


def facts(shares):
    """What `metrics.json` says of the waits: each epoch's share and their mean."""
    measured = [share for share in shares if share is not None]
    return {"input_wait_per_epoch": list(shares),
            "input_wait": round(sum(measured) / len(measured), 4) if measured else None}


def input_bound_advice(facts_, data_service=None):
    """One line saying the run was input-bound and what to do, or None if it was not."""
    mean = facts_.get("input_wait")
    if mean is None or mean <= INPUT_BOUND_SHARE:
        return None
    more = ("start more workers of its tf.data service (python -m "
            "model.training.data_service worker)" if data_service
            else "give the input more CPU cores, or other machines' with --data_service")
    return (f"input-bound: training waited for its input {mean:.0%} of its step time "
            f"(over {INPUT_BOUND_SHARE:.0%}); cut more clips from each video read "
            "(--samples_per_video 2), store fewer frames (python -m preprocess --fps) or "
            f"read shorter or smaller clips (--num_frames, --image_size), or {more}")


def stall_line(step, seconds, data_service=None):
    """What to say of a step that has waited `seconds` for its batch."""
    head = (f"train: step {step + 1} of this launch has waited {seconds:.0f} s for its batch"
            if step else f"train: the first step of this launch has waited {seconds:.0f} s "
                         "for its batch (and to build and compile)")
    if data_service:
        return (f"{head} from the tf.data service at {data_service}; are its workers "
                "running? Start one with python -m model.training.data_service worker "
                f"--dispatcher {data_service.split('://')[-1]} --port PORT")
    return (f"{head}; the reader is stalled: is the file system of --records still "
            "answering?")


def report_input_bound(facts_, data_service=None):
    """Prints `input_bound_advice` as a run's last line, if the run was input-bound."""
    advice = input_bound_advice(facts_, data_service)
    if advice:
        print(f"train: {advice}", flush=True)
