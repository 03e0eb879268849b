"""Measures training throughput of a model: clips per second for forward, backward, update.

    python scripts/benchmark_model.py --model r2plus1d_18 --num_frames 16 \
        --image_size 112 --batch_size 8 [--precision mixed_float16] [--jit_compile]

Random uint8 clips, so only the model is measured; the same command runs on a
CPU or a GPU. The last line is JSON.
"""

import argparse
import json
import os
import time

from model import PRECISIONS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="r2plus1d_18", help="network (default: r2plus1d_18)")
    parser.add_argument("--width_multiplier", type=float, default=1.0,
                        help="R(2+1)D width (default: 1.0)")
    parser.add_argument("--num_classes", type=int, default=101, help="logits (default: 101)")
    parser.add_argument("--num_frames", type=int, default=16,
                        help="frames per clip (default: 16)")
    parser.add_argument("--image_size", type=int, default=112,
                        help="frame side (default: 112)")
    parser.add_argument("--batch_size", type=int, default=8,
                        help="clips per step (default: 8)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="dtype policy (default: auto)")
    parser.add_argument("--jit_compile", action="store_true",
                        help="compile with XLA (default: off)")
    parser.add_argument("--warmup_steps", type=int, default=2,
                        help="untimed steps first (default: 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default: 5)")
    args = parser.parse_args(argv)
    if args.precision == "mixed_bfloat16":
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # see train.py

    import keras
    import numpy as np
    import tensorflow as tf

    from model.network.build import build_model
    from model.training.precision import set_precision

    policy = set_precision(args.precision)
    options = {} if args.model == "tutorial" else {"width_multiplier": args.width_multiplier}
    network = build_model(args.model, args.num_classes, args.num_frames, args.image_size,
                          **options)
    network.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=args.jit_compile)
    rng = np.random.default_rng(0)
    clips = tf.constant(rng.integers(0, 256, (args.batch_size, args.num_frames,
                                              args.image_size, args.image_size, 3),
                                     dtype=np.uint8))
    labels = tf.constant(rng.integers(0, args.num_classes, args.batch_size))
    for _ in range(args.warmup_steps):
        network.train_on_batch(clips, labels)
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = network.train_on_batch(clips, labels)
    seconds = time.perf_counter() - started
    rate = args.steps * args.batch_size / seconds
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"{args.model}: {network.count_params():,} parameters, {policy}, "
          f"{args.batch_size}x{args.num_frames}x{args.image_size}x{args.image_size} on "
          f"{device}: {rate:.2f} training clips/s ({seconds / args.steps:.2f} s/step)")
    print(json.dumps({"model": args.model, "parameters": network.count_params(),
                      "precision": policy, "jit_compile": args.jit_compile,
                      "device": device, "batch_size": args.batch_size,
                      "num_frames": args.num_frames, "image_size": args.image_size,
                      "clips_per_second": round(rate, 3),
                      "seconds_per_step": round(seconds / args.steps, 3),
                      "final_loss": float(np.asarray(loss).ravel()[0])}))


if __name__ == "__main__":
    main()
