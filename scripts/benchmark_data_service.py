"""Measures training clips per second through a tf.data service on this machine
against the reader read here, and the service's cost per clip.

    python scripts/benchmark_data_service.py --records DIR --split train --num_frames 16 \
        --frame_step 2 --image_size 112 --batch_size 8

Starts a dispatcher and, in turn, one and two workers on 127.0.0.1
(`python -m model.training.data_service`), and times, taking turns: the
reader as train.py reads locally (ranged where the shards have indexes), the
whole-record reader (`ranged=False`: the path the service runs, so the fair
local baseline), and the same whole-record pipeline through the service,
as `train.py --data_service` builds it (dynamic sharding, one-hot labels
left out). Besides clips per second, it gives this process's CPU time per
clip, which is what the trainer spends on its input: all of the decoding
when it reads locally, only receiving batches through the service. On one
machine the workers share its cores with this process: the figures measure
the service's overhead and contention, not its scaling across machines.
The last line is JSON.
"""

import json
import os
import pathlib
import re
import select
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
# First: it loads TensorFlow without its start-up notices. Pipelines are timed its one way.
from benchmark_input import clips_per_second, timing_parser  # noqa: E402

from model.training import data_service  # noqa: E402
from preprocess import errors, reader  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def start_server(*args):
    """A `python -m model.training.data_service` process and the port it printed."""
    process = subprocess.Popen([sys.executable, "-m", "model.training.data_service", *args],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    ready, _, _ = select.select([process.stdout], [], [], 120)
    line = process.stdout.readline() if ready else ""
    found = re.search(r" at (?:grpc://)?[^\s:]+:(\d+)", line)
    if not found:
        process.kill()
        sys.exit(f"error: {' '.join(args[:1])} did not start")
    return process, int(found.group(1))


def timed(datasets, seconds, rounds, warmup):
    """Each `(dataset, clips per batch)` timed `rounds` times, taking turns (as
    `benchmark_input.alternating_medians`), with this process's CPU time per clip.

    Returns:
        `{name: (median clips/s, median CPU ms per clip, [clips/s of each timing])}`.
    """
    rates = {name: [] for name in datasets}
    cpu = {name: [] for name in datasets}
    for _ in range(rounds):
        for name, (dataset, clips_per_batch) in datasets.items():
            wall, used = time.perf_counter(), time.process_time()
            rate = clips_per_second(dataset, clips_per_batch, seconds, warmup)
            wall, used = time.perf_counter() - wall, time.process_time() - used
            rates[name].append(rate)
            cpu[name].append(1000 * used / (wall * rate))  # warm-up included, at its rate
    return {name: (statistics.median(rates[name]), statistics.median(cpu[name]),
                   [round(r, 1) for r in rates[name]]) for name in datasets}


def main(argv=None):
    args = timing_parser("benchmark_data_service.py", __doc__, num_frames=16, frame_step=2,
                         image_size=112).parse_args(argv)

    spec = reader.ClipSpec(num_frames=args.num_frames, frame_step=args.frame_step,
                           image_size=args.image_size, training=True, crop_scale=None,
                           flip=False)
    batch = args.batch_size

    def whole():
        return reader.make_dataset(args.records, args.split, spec, batch_size=batch,
                                   repeat=True, seed=0, ranged=False)

    local = {"reader": (reader.make_dataset(args.records, args.split, spec, batch_size=batch,
                                            repeat=True, seed=0), batch),
             "reader_whole": (whole(), batch)}
    dispatcher, port = start_server("dispatcher", "--port", "0")
    address = f"grpc://127.0.0.1:{port}"
    workers = []
    figures = {"config": f"{args.num_frames}x{args.image_size}x{args.image_size} step "
                         f"{args.frame_step}", "batch_size": batch, "cores": os.cpu_count(),
               "records": args.records, "split": args.split}
    try:
        for count in (1, 2):
            workers.append(start_server("worker", "--dispatcher", f"127.0.0.1:{port}",
                                        "--port", "0", "--host", "127.0.0.1")[0])
            # Anonymous jobs: each timing's iterator gets a job of its own.
            served = data_service.distribute(whole(), address, None)
            results = timed({**local, "service": (served, batch)}, args.seconds, args.rounds,
                            args.warmup)
            rates = {name: rate for name, (rate, _, _) in results.items()}
            row = {}
            for name, (rate, cpu_ms, timings) in results.items():
                row.update({f"{name}_clips_per_second": round(rate, 1),
                            f"{name}_cpu_ms_per_clip": round(cpu_ms, 2),
                            f"{name}_timings": timings})
            # What the service adds to a clip's time, against the same pipeline read here.
            row["overhead_ms_per_clip"] = round(
                1000 * (1 / rates["service"] - 1 / rates["reader_whole"]), 2)
            figures[f"workers_{count}"] = row
            print(f"{count} worker(s): service {rates['service']:.1f} clips/s, local "
                  f"whole-record reader {rates['reader_whole']:.1f}, local reader "
                  f"{rates['reader']:.1f}; the service adds "
                  f"{row['overhead_ms_per_clip']:.2f} ms a clip; this process's CPU a clip "
                  f"{row['service_cpu_ms_per_clip']:.2f} ms through the service, "
                  f"{row['reader_whole_cpu_ms_per_clip']:.2f} reading whole records here",
                  flush=True)
    finally:
        for process in [*workers, dispatcher]:
            process.kill()
            process.wait()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_command(main))
