"""Measures the tf.data reader against the tutorial's OpenCV generator and a decode-only limit.

    python scripts/benchmark_input.py --records DIR --split train --num_frames 10 \
        --frame_step 15 --image_size 224 --batch_size 8

On the same videos, it times, after a warm-up:
1. the reader (`preprocess.reader.make_dataset`, training mode, as train.py
   uses it: flips are the model's, on the device, unless `--cpu_flip`);
2. the tutorial's way: a Python generator that opens each source video with
   OpenCV, seeks, reads every frame_step-th frame and resizes each frame with
   TensorFlow, fed through `tf.data.Dataset.from_generator`;
3. the limit: only JPEG-decoding frames of clips drawn as the reader draws
   them, held in memory, one clip per call, on all cores.
The reader and the limit take turns, one at a time, for `--rounds` timings
each, and the medians are reported: a shared machine's speed drifts by tens of
percent within a minute. The generator runs last: pipelines timed after it
ran slower. Prints clips per second and the ratios; the last line is JSON.
"""

import argparse
import gc
import json
import os
import random
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from preprocess import manifest as manifest_lib  # noqa: E402
from preprocess import layouts, reader, schema, sources  # noqa: E402


def clips_per_second(dataset, batch_size, seconds, warmup=2.0):
    """Clips per second of a dataset, timed for `seconds` after `warmup` seconds.

    The iterator, with the background threads tf.data starts for it, is gone
    before this returns, so no other pipeline's prefetching competes for the cores.
    """
    batches = iter(dataset)

    def pull(duration):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < duration:
            next(batches)
            count += 1
        return count * batch_size / (time.perf_counter() - started)

    pull(warmup)  # lets tf.data's autotuning settle
    rate = pull(seconds)
    del batches
    gc.collect()
    return rate


def alternating_medians(datasets, batch_size, seconds, rounds, warmup=2.0):
    """Times each dataset `rounds` times, taking turns; returns the median of each.

    On a shared machine the cores' speed drifts by tens of percent over a
    minute; taking turns exposes every pipeline to the same drift.
    """
    rates = {name: [] for name in datasets}
    for _ in range(rounds):
        for name, dataset in datasets.items():
            rates[name].append(clips_per_second(dataset, batch_size, seconds, warmup))
    return ({name: statistics.median(values) for name, values in rates.items()},
            {f"{name}_timings": [round(v, 1) for v in values] for name, values in rates.items()})


# -- 2. The tutorial's generator, written again here for the comparison. -------------

def tutorial_clip(path, num_frames, frame_step, image_size):
    """Seeks to a random start and reads every frame_step-th frame, as the tutorial does."""
    capture = cv2.VideoCapture(path)
    length = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    need = 1 + (num_frames - 1) * frame_step
    start = random.randint(0, length - need) if need <= length else 0
    capture.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    ok, frame = capture.read()
    frames.append(format_frame(frame, image_size) if ok else None)
    for _ in range(num_frames - 1):
        for _ in range(frame_step):
            ok, frame = capture.read()
        frames.append(format_frame(frame, image_size) if ok else None)
    capture.release()
    blank = np.zeros((image_size, image_size, 3), np.float32)
    return np.stack([blank if f is None else f for f in frames])[..., [2, 1, 0]]


def format_frame(frame, image_size):
    frame = tf.image.convert_image_dtype(frame, tf.float32)
    return tf.image.resize_with_pad(frame, image_size, image_size).numpy()


def tutorial_dataset(paths, labels, args):
    def generate():
        pairs = list(zip(paths, labels))
        while True:
            random.shuffle(pairs)
            for path, label in pairs:
                yield tutorial_clip(path, args.num_frames, args.frame_step,
                                    args.image_size), label

    signature = (tf.TensorSpec((None, None, None, 3), tf.float32),
                 tf.TensorSpec((), tf.int16))
    return tf.data.Dataset.from_generator(generate, output_signature=signature).batch(
        args.batch_size)


# -- 3. The decode-only limit. ------------------------------------------------------

def clip_jpegs(shards, num_videos, num_frames, frame_step, clips=512, seed=0):
    """JPEG bytes `[clips, num_frames]` of clips drawn as the reader draws them.

    Random starts over the first `clips` videos (all of them, if fewer), an
    equal number of clips each, so the limit decodes frames of the same kind as
    the reader. Only the chosen frames are kept in memory.
    """
    rng = np.random.default_rng(seed)
    per_video = -(-clips // min(num_videos, clips))  # ceil
    span = reader.clip_span(num_frames, frame_step)
    chosen = []
    for serialized in tf.data.TFRecordDataset(shards).take(clips):
        frames = schema.parse_video_example(serialized)[schema.IMAGE_ENCODED].numpy()
        for start in rng.integers(0, max(len(frames) - span, 0) + 1, per_video):
            chosen.append(frames[(start + np.arange(num_frames) * frame_step) % len(frames)])
    return np.stack(chosen[:clips])


def decode_only_dataset(jpegs, batch_size):
    """Only the JPEG decodes: a clip's frames per call, calls on all cores."""
    num_frames = jpegs.shape[1]

    def decode(clip):
        return tf.stack([tf.io.decode_jpeg(clip[i], channels=3) for i in range(num_frames)])

    return (tf.data.Dataset.from_tensor_slices(jpegs).repeat()
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def source_paths(manifest, split, records_dir):
    """The source video of each record of a split, for the generator."""
    source = sources.open_source(manifest["source"])
    options = manifest["options"]
    refs = layouts.list_source(source, layout=manifest.get("layout", "auto"),
                               annotations=options.get("annotations"),
                               split_lists=options.get("split_lists"),
                               split_index=options.get("split_index", 1)).videos
    by_id = {ref.video_id: ref.location for ref in refs}
    paths, labels = [], []
    for serialized in tf.data.TFRecordDataset(manifest_lib.shard_paths(records_dir, manifest,
                                                                       split)):
        video = schema.parse_video_example(serialized)
        paths.append(by_id[video[schema.VIDEO_ID].numpy().decode()])
        labels.append(int(video[schema.LABEL_INDEX]))
    return paths, labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--num_frames", type=int, default=10)
    parser.add_argument("--frame_step", type=int, default=15)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--crop", choices=("random", "resized"), default="random",
                        help="the reader's training crops (default: plain random)")
    parser.add_argument("--cpu_flip", action="store_true",
                        help="the reader flips clips too (train.py leaves flips to the "
                             "model, on the device; default: off)")
    parser.add_argument("--samples_per_video", type=int, default=1,
                        help="the reader's training clips per video read (repeated "
                             "augmentation; default: 1)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of one timing (default: 5.0)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds pulled before each timing, for tf.data's autotuning "
                             "(default: 2.0)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timings of each pipeline, taking turns; medians are reported "
                             "(default: 3)")
    args = parser.parse_args(argv)

    manifest = manifest_lib.read_manifest(args.records)
    shards = manifest_lib.shard_paths(args.records, manifest, args.split)
    figures = {"config": f"{args.num_frames}x{args.image_size}x{args.image_size} step "
                         f"{args.frame_step}", "crop": args.crop,
               "cpu_flip": args.cpu_flip, "samples_per_video": args.samples_per_video,
               "batch_size": args.batch_size,
               "cores": os.cpu_count(), "records": args.records}

    spec = reader.ClipSpec(num_frames=args.num_frames, frame_step=args.frame_step,
                           image_size=args.image_size, training=True,
                           crop_scale=None if args.crop == "random" else (0.4, 1.0),
                           flip=args.cpu_flip, samples_per_video=args.samples_per_video)
    dataset = reader.make_dataset(args.records, args.split, spec, batch_size=args.batch_size,
                                  repeat=True)
    num_videos = manifest["splits"][args.split]["num_videos"]
    limit = decode_only_dataset(
        clip_jpegs(shards, num_videos, args.num_frames, args.frame_step), args.batch_size)
    medians, timings = alternating_medians({"reader": dataset, "decode_limit": limit},
                                           args.batch_size, args.seconds, args.rounds,
                                           args.warmup)
    figures.update(medians)
    print(f"reader:    {figures['reader']:8.1f} clips/s (median of {args.rounds} timings)")
    print(f"limit:     {figures['decode_limit']:8.1f} clips/s (JPEG decode only, all cores)")
    # Last: pipelines timed after the generator ran slower (BENCHMARKS.md).
    if os.path.isdir(manifest["source"]):
        paths, labels = source_paths(manifest, args.split, args.records)
        figures["generator"] = clips_per_second(tutorial_dataset(paths, labels, args),
                                                args.batch_size, 2 * args.seconds,
                                                args.warmup)
        print(f"generator: {figures['generator']:8.1f} clips/s (the tutorial's way)")
    else:
        figures["generator"] = None
        print("generator: skipped, the records' source is not a local folder")

    if figures["generator"]:
        figures["reader_over_generator"] = figures["reader"] / figures["generator"]
        print(f"reader / generator = {figures['reader_over_generator']:.1f}x")
    figures["reader_over_limit"] = figures["reader"] / figures["decode_limit"]
    print(f"reader / limit     = {figures['reader_over_limit']:.1%}")
    figures.update(timings)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                      for k, v in figures.items()}))


if __name__ == "__main__":
    main()
