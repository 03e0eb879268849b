"""Measures the tf.data reader against its peers and a decode-only limit.

    python scripts/benchmark_input.py --records DIR --split train --num_frames 16 \
        --frame_step 2 --image_size 112 --batch_size 8 [--mode eval]

On the same records, in training mode (`--mode train`, the default), it times:
1. the reader (`preprocess.reader.make_dataset`, training mode, as train.py
   uses it: flips are the model's, on the device, unless `--cpu_flip`),
   reading only each clip's bytes where the shards have indexes
   (`preprocess.index`), and the same reader reading records whole
   (`ranged=False`, as it reads records without indexes: "reader_whole");
2. a minimal pipeline: TFRecordDataset -> parse frames, height, width ->
   gather -> `decode_and_crop_jpeg` of a random square, nothing else;
3. TF Model Garden's reader (`official.vision.dataloaders.video_input`'s
   Decoder and Parser, with our interleave, shuffle and batch), when
   `official` imports (it is never a dependency: put an unpacked
   tf-models-official on PYTHONPATH for this script only);
4. the limit: only JPEG-decoding frames of clips drawn as the reader draws
   them, held in memory, one clip per call, on all cores;
5. the tutorial's way, last: a Python generator that opens each source video
   with OpenCV, seeks, reads every frame_step-th frame and resizes each frame
   with TensorFlow (pipelines timed after it ran slower).
In evaluation mode (`--mode eval`, `--eval_clips` x `--eval_crops` views a
video, as train.py's final evaluation cuts them), it times the reader, the
reader's former way (each crop of each clip decoded on its own), Model
Garden's evaluation parser, and the limit (each clip position's frames
decoded whole, once). Pipelines take turns for `--rounds` timings each, and
the medians are reported: a shared machine's speed drifts by tens of percent
within a minute. Prints clips per second and the ratios; the last line is JSON.
"""

import gc
import json
import os
import random
import statistics
import sys
import time

from model import import_tensorflow, quiet_tensorflow_logs

quiet_tensorflow_logs()  # a benchmark's lines and errors, without TensorFlow's start-up notices
tf = import_tensorflow()
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from preprocess import manifest as manifest_lib  # noqa: E402
from preprocess import errors, layouts, reader, schema, sources  # noqa: E402


def clips_per_second(dataset, clips_per_batch, seconds, warmup=2.0):
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
        return count * clips_per_batch / (time.perf_counter() - started)

    pull(warmup)  # lets tf.data's autotuning settle
    rate = pull(seconds)
    del batches
    gc.collect()
    return rate


def alternating_medians(datasets, seconds, rounds, warmup=2.0):
    """Times each `(dataset, clips per batch)` `rounds` times, taking turns; returns medians.

    On a shared machine the cores' speed drifts by tens of percent over a
    minute; taking turns exposes every pipeline to the same drift.
    """
    rates = {name: [] for name in datasets}
    for _ in range(rounds):
        for name, (dataset, clips_per_batch) in datasets.items():
            rates[name].append(clips_per_second(dataset, clips_per_batch, seconds, warmup))
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


def eval_clip_jpegs(shards, num_frames, frame_step, num_clips, videos=64):
    """JPEG bytes `[videos * num_clips, num_frames]`: every evaluation clip position's frames."""
    chosen = []
    for serialized in tf.data.TFRecordDataset(shards).take(videos):
        frames = schema.parse_video_example(serialized)[schema.IMAGE_ENCODED]
        indices = reader.even_clip_indices(tf.shape(frames)[0], num_frames, frame_step,
                                           num_clips)
        chosen.extend(tf.gather(frames, indices).numpy())
    return np.stack(chosen)


def read_records(shards, training):
    """Our interleave, shuffle and repeat: what every pipeline here starts from."""
    files = tf.data.Dataset.from_tensor_slices(shards)
    records = files.interleave(lambda path: tf.data.TFRecordDataset(path, buffer_size=8 << 20),
                               cycle_length=min(len(shards), 8),
                               num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=not training)
    return (records.shuffle(256) if training else records).repeat()


def minimal_dataset(shards, args):
    """TFRecordDataset -> parse frames, height, width -> gather -> decode_and_crop_jpeg."""
    size, span = args.image_size, reader.clip_span(args.num_frames, args.frame_step)

    def cut(serialized):
        context, sequence = tf.io.parse_single_sequence_example(
            serialized,
            context_features={schema.HEIGHT: tf.io.FixedLenFeature([], tf.int64),
                              schema.WIDTH: tf.io.FixedLenFeature([], tf.int64)},
            sequence_features={schema.IMAGE_ENCODED: tf.io.FixedLenSequenceFeature(
                [], tf.string)})
        frames = sequence[schema.IMAGE_ENCODED]
        count = tf.shape(frames)[0]
        start = tf.random.uniform([], 0, tf.maximum(count - span + 1, 1), tf.int32)
        chosen = tf.gather(frames, (start + tf.range(args.num_frames) * args.frame_step)
                           % count)
        height = tf.cast(context[schema.HEIGHT], tf.int32)
        width = tf.cast(context[schema.WIDTH], tf.int32)
        window = tf.stack([tf.random.uniform([], 0, height - size + 1, tf.int32),
                           tf.random.uniform([], 0, width - size + 1, tf.int32), size, size])
        return tf.stack([tf.io.decode_and_crop_jpeg(chosen[i], window, channels=3)
                         for i in range(args.num_frames)])

    return (read_records(shards, True)
            .map(cut, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))


def model_garden_dataset(shards, args, manifest, training):
    """Model Garden's own Decoder and Parser over our records, or None if not importable."""
    try:
        from official.vision.configs import video_classification as exp_cfg
        from official.vision.dataloaders import video_input
    except ImportError:
        return None
    short_side = min(min(size) for size in manifest["geometry"]["frame_sizes"])
    # Like for like: uint8 clips, as ours (the model converts them on the device),
    # cropped at the stored scale (its resize to min_image_size is then a no-op).
    params = exp_cfg.DataConfig(
        feature_shape=(args.num_frames, args.image_size, args.image_size, 3),
        temporal_stride=args.frame_step, num_classes=len(manifest["classes"]),
        num_test_clips=args.eval_clips, num_test_crops=args.eval_crops,
        min_image_size=short_side, is_training=training, dtype="uint8")
    decoder = video_input.Decoder(schema.IMAGE_ENCODED, schema.LABEL_INDEX)
    parse = video_input.Parser(params, schema.IMAGE_ENCODED, schema.LABEL_INDEX).parse_fn(
        training)
    videos = args.batch_size if training else max(1, args.batch_size // (
        args.eval_clips * args.eval_crops))
    return (read_records(shards, training)
            .map(lambda serialized: parse(decoder.decode(serialized)),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
            .batch(videos).prefetch(tf.data.AUTOTUNE)), videos


def per_crop_eval_dataset(shards, spec, batch_size):
    """The reader's evaluation before it decoded each frame once: a decode per crop."""
    def cut(serialized):
        video = schema.parse_video_example(serialized)
        frames = video[schema.IMAGE_ENCODED]
        height = tf.cast(video[schema.HEIGHT], tf.int32)
        width = tf.cast(video[schema.WIDTH], tf.int32)
        indices = reader.even_clip_indices(tf.shape(frames)[0], spec.num_frames,
                                           spec.frame_step, spec.num_clips)
        windows = reader.square_crop_windows(height, width, spec.num_crops,
                                             spec.eval_side(height, width))
        return tf.stack([reader.decode_clip(frames, indices[c], windows[k], spec.image_size)
                         for c in range(spec.num_clips) for k in range(spec.num_crops)])

    return (read_records(shards, False)
            .map(cut, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
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


def timing_parser(script, doc, *, num_frames, frame_step, image_size):
    """The flags every input benchmark takes: the records, the clips, and the timings.

    A misuse is one `error:` line (`preprocess.errors.ArgumentParser`).
    """
    parser = errors.ArgumentParser(prog=f"python scripts/{script}",
                                   description=doc.split("\n\n")[0])
    add = parser.add_argument
    add("--records", required=True)
    add("--split", default="train")
    add("--num_frames", type=int, default=num_frames)
    add("--frame_step", type=int, default=frame_step)
    add("--image_size", type=int, default=image_size)
    add("--batch_size", type=int, default=8)
    add("--seconds", type=float, default=5.0, help="length of one timing (default: 5.0)")
    add("--warmup", type=float, default=2.0,
        help="seconds pulled before each timing, for tf.data's autotuning and a tf.data "
             "service's job start (default: 2.0)")
    add("--rounds", type=int, default=3,
        help="timings of each pipeline, taking turns; medians are reported (default: 3)")
    return parser


def main(argv=None):
    parser = timing_parser("benchmark_input.py", __doc__, num_frames=10, frame_step=15,
                           image_size=224)
    parser.add_argument("--crop", choices=("random", "resized"), default="random",
                        help="the reader's training crops (default: plain random)")
    parser.add_argument("--cpu_flip", action="store_true",
                        help="the reader flips clips too (train.py leaves flips to the "
                             "model, on the device; default: off)")
    parser.add_argument("--samples_per_video", type=int, default=1,
                        help="the reader's training clips per video read (repeated "
                             "augmentation; default: 1)")
    parser.add_argument("--mode", choices=("train", "eval"), default="train",
                        help="training clips, or --eval_clips x --eval_crops evaluation "
                             "views a video (default: train)")
    parser.add_argument("--eval_clips", type=int, default=10)
    parser.add_argument("--eval_crops", type=int, choices=(1, 3), default=3)
    args = parser.parse_args(argv)

    manifest = manifest_lib.read_manifest(args.records)
    shards = manifest_lib.shard_paths(args.records, manifest, args.split)
    figures = {"config": f"{args.num_frames}x{args.image_size}x{args.image_size} step "
                         f"{args.frame_step}", "crop": args.crop,
               "cpu_flip": args.cpu_flip, "samples_per_video": args.samples_per_video,
               "batch_size": args.batch_size,
               "cores": os.cpu_count(), "records": args.records}

    figures["mode"] = args.mode
    crop_scale = None if args.crop == "random" else (manifest_lib.MIN_CROP_SCALE, 1.0)
    num_videos = manifest["splits"][args.split]["num_videos"]
    batch = args.batch_size
    if args.mode == "train":
        spec = reader.ClipSpec(num_frames=args.num_frames, frame_step=args.frame_step,
                               image_size=args.image_size, training=True,
                               crop_scale=crop_scale, flip=args.cpu_flip,
                               samples_per_video=args.samples_per_video)
        pipelines = {
            "reader": (reader.make_dataset(args.records, args.split, spec, batch_size=batch,
                                           repeat=True), batch),
            "reader_whole": (reader.make_dataset(args.records, args.split, spec,
                                                 batch_size=batch, repeat=True,
                                                 ranged=False), batch),
            "minimal": (minimal_dataset(shards, args), batch),
            "decode_limit": (decode_only_dataset(
                clip_jpegs(shards, num_videos, args.num_frames, args.frame_step), batch), batch),
        }
    else:
        spec = reader.ClipSpec(num_frames=args.num_frames, frame_step=args.frame_step,
                               image_size=args.image_size, crop_scale=crop_scale,
                               num_clips=args.eval_clips, num_crops=args.eval_crops)
        pipelines = {
            "reader": (reader.make_dataset(args.records, args.split, spec, batch_size=batch,
                                           repeat=True), batch),
            "reader_whole": (reader.make_dataset(args.records, args.split, spec,
                                                 batch_size=batch, repeat=True,
                                                 ranged=False), batch),
            "per_crop": (per_crop_eval_dataset(shards, spec, batch), batch),
            # Every clip position's frames decoded whole, once: the evaluation's limit.
            "decode_limit": (decode_only_dataset(eval_clip_jpegs(
                shards, args.num_frames, args.frame_step, args.eval_clips), batch),
                batch * args.eval_crops),
        }
    garden = model_garden_dataset(shards, args, manifest, args.mode == "train")
    if garden:
        dataset, videos = garden
        views = 1 if args.mode == "train" else args.eval_clips * args.eval_crops
        pipelines["model_garden"] = (dataset, videos * views)
    medians, timings = alternating_medians(pipelines, args.seconds, args.rounds, args.warmup)
    figures.update(medians)
    figures.setdefault("model_garden", None)
    for name in pipelines:
        print(f"{name:13s} {figures[name]:8.1f} clips/s (median of {args.rounds} timings)")
    if not garden:
        print("model_garden: skipped, `official` (tf-models-official) does not import")
    for name in ("reader", "reader_whole", "minimal", "model_garden", "per_crop"):
        if name != "reader" and figures.get(name):
            figures[f"reader_over_{name}"] = figures["reader"] / figures[name]
            print(f"reader / {name} = {figures[f'reader_over_{name}']:.2f}x")
    if args.mode == "eval":
        figures.update(timings)
        figures["reader_over_limit"] = figures["reader"] / figures["decode_limit"]
        print(f"reader / limit     = {figures['reader_over_limit']:.1%}")
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in figures.items()}))
        return
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
    sys.exit(errors.run_command(main))
