"""The tf.data reader: turns the records into clips, choosing the clip at read time.

The records hold every frame of every video; the reader decides per
experiment which frames make a clip and how large they are, so one
preprocessing run serves many clip configurations. Only the frames a clip
uses are JPEG-decoded, and during training only the crop window of each.

    spec = ClipSpec(num_frames=16, frame_step=2, image_size=112, training=True)
    dataset = make_dataset("records/", "train", spec, batch_size=8)

Clips stay uint8 `[batch, num_frames, image_size, image_size, 3]`; the model
rescales them on the device.
"""

import dataclasses
import math
import os
import typing

import numpy as np
import tensorflow as tf

from preprocess import index as index_lib
from preprocess import manifest as manifest_lib
from preprocess import schema

AUTOTUNE = tf.data.AUTOTUNE


# ---------------------------------------------------------------------------
# Which frames: temporal sampling
# ---------------------------------------------------------------------------

def clip_span(num_frames, frame_step):
    """How many source frames a clip covers."""
    return (num_frames - 1) * frame_step + 1


def uniform_draws(seed, shape):
    """Uniform floats in [0, 1) of `shape`, all of a clip's random choices in one op.

    Every random choice of the reader is drawn from a stateless seed that
    travels with the element, so a clip depends only on the dataset's seed and
    the element's place: parallel and deterministic maps give the same clips,
    and TensorFlow need not run the map serially under op determinism. A seed
    of None draws one at random; an int is taken as `[seed, 0]`.
    """
    if seed is None:
        seed = tf.random.uniform([2], 0, tf.int32.max, tf.int32)
    elif isinstance(seed, int):
        seed = tf.constant([seed, 0], tf.int32)
    return tf.random.stateless_uniform(shape, seed)


def _below(draw, count):
    """An int in `[0, count)` from a uniform float `draw` in [0, 1).

    Truncation is the floor here; and `draw` is at most 1 - 2**-23, so the
    product stays below `count` for any count under 2**22 (frames or pixels).
    """
    return tf.cast(draw * tf.cast(count, tf.float32), tf.int32)


def random_clip_indices(video_frames, num_frames, frame_step, step_jitter=0, draws=None):
    """Frame indices `[num_frames]` of a clip at a random start, for training.

    With `step_jitter`, the step is drawn from `frame_step +- step_jitter` (at
    least 1). A video shorter than the clip loops its frames, as TF Model
    Garden does, rather than padding with black frames. `draws` holds two
    uniform floats (see `uniform_draws`); None draws them.
    """
    draws = uniform_draws(None, [2]) if draws is None else draws
    step = tf.constant(frame_step, tf.int32)
    if step_jitter:
        step = tf.maximum(1, step - step_jitter + _below(draws[0], 2 * step_jitter + 1))
    span = clip_span(num_frames, step)
    # A long video starts anywhere the whole clip fits; a short one anywhere.
    limit = tf.where(video_frames >= span, video_frames - span + 1, video_frames)
    start = _below(draws[1], limit)
    return (start + tf.range(num_frames) * step) % video_frames


def even_clip_indices(video_frames, num_frames, frame_step, num_clips=1):
    """Frame indices `[num_clips, num_frames]` of clips spaced evenly over a video.

    One clip is the centre clip; several span the video from its first to its
    last possible start. Deterministic, for evaluation. Short videos loop.
    """
    span = clip_span(num_frames, frame_step)
    last_start = tf.maximum(video_frames - span, 0)
    if num_clips == 1:
        starts = tf.reshape(last_start // 2, [1])
    else:
        starts = tf.cast(tf.round(tf.linspace(0.0, tf.cast(last_start, tf.float32),
                                              num_clips)), tf.int32)
    offsets = tf.range(num_frames) * frame_step
    return (starts[:, None] + offsets[None, :]) % video_frames


# ---------------------------------------------------------------------------
# Which pixels: spatial sampling
# ---------------------------------------------------------------------------

def random_crop_window(height, width, scale=(manifest_lib.MIN_CROP_SCALE, 1.0),
                       ratio=(3 / 4, 4 / 3), draws=None):
    """A random `[y, x, h, w]` window covering `scale` of the area at aspect `ratio`.

    The window always fits the frame: an aspect the frame cannot hold is
    clamped, as Inception-style random resized crops do. `draws` holds four
    uniform floats; None draws them.
    """
    draws = uniform_draws(None, [4]) if draws is None else draws
    area = tf.cast(height * width, tf.float32)
    target = area * (scale[0] + (scale[1] - scale[0]) * draws[0])
    low, high = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(low + (high - low) * draws[1])
    crop_w = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
    crop_w = tf.clip_by_value(crop_w, 1, width)
    crop_h = tf.clip_by_value(crop_h, 1, height)
    y = _below(draws[2], height - crop_h + 1)
    x = _below(draws[3], width - crop_w + 1)
    return tf.stack([y, x, crop_h, crop_w])


def random_square_window(height, width, size, draws=None):
    """A `[y, x, h, w]` square of side `size` (or the short side, if smaller) at a random place.

    The R(2+1)D recipe: random 112x112 crops of 128x171 frames, no rescaling.
    `draws` holds two uniform floats; None draws them.
    """
    draws = uniform_draws(None, [2]) if draws is None else draws
    side = tf.minimum(tf.minimum(height, width), size)
    y = _below(draws[0], height - side + 1)
    x = _below(draws[1], width - side + 1)
    return tf.stack([y, x, side, side])


def square_crop_windows(height, width, num_crops=1, side=None):
    """`[num_crops, 4]` square windows of side `side`: centre, or left/centre/right.

    With 3 crops they run along the long side (left, centre, right for a
    landscape frame; top, centre, bottom for a portrait one), the usual 3-crop
    video evaluation. `side` defaults to the short side.
    """
    side = tf.minimum(height, width) if side is None else side
    if num_crops == 1:
        fractions = tf.constant([0.5])
    elif num_crops == 3:
        fractions = tf.constant([0.0, 0.5, 1.0])
    else:
        raise ValueError(f"num_crops must be 1 or 3, not {num_crops}")
    # Across the short side a window is always centred.
    long_y = height > width
    y_fractions = tf.where(long_y, fractions, tf.fill([num_crops], 0.5))
    x_fractions = tf.where(long_y, tf.fill([num_crops], 0.5), fractions)
    y = tf.cast(tf.round(y_fractions * tf.cast(height - side, tf.float32)), tf.int32)
    x = tf.cast(tf.round(x_fractions * tf.cast(width - side, tf.float32)), tf.int32)
    sides = tf.fill([num_crops], side)
    return tf.stack([y, x, sides, sides], axis=1)


def decode_clip(encoded_frames, indices, window, image_size, resize=True):
    """Decodes `indices` of a video, only inside `window`, resized to a square.

    Args:
        encoded_frames: string tensor `[video_frames]` of JPEGs.
        indices: int tensor `[num_frames]`; a static length.
        window: int tensor `[4]`: y, x, height, width of the crop.
        image_size: side of the output frames.
        resize: False when the window is known to be `image_size` square, which
            spares the graph its conditional resize. Defaults to True.

    Returns:
        uint8 `[num_frames, image_size, image_size, 3]`.
    """
    # One gather, then one decode op per frame (unrolled): fewer small ops per
    # clip than indexing frame by frame, which tf.data pays for on every clip.
    chosen = tf.unstack(tf.gather(encoded_frames, indices), num=indices.shape[0])
    clip = tf.stack([tf.io.decode_and_crop_jpeg(jpeg, window, channels=3) for jpeg in chosen])
    if not resize:
        return tf.ensure_shape(clip, [len(chosen), image_size, image_size, 3])
    return resize_square(clip, window[2], window[3], image_size)


def resize_square(clip, height, width, image_size):
    """A clip `[T, height, width, 3]` resized to `image_size` squares, unless it is one."""
    def resize():
        # Bilinear without antialiasing: stored frames are near the clip size
        # already, so there is little to alias, and antialiasing is costly.
        resized = tf.image.resize(clip, [image_size, image_size])
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    # A window of the output size needs no resize at all.
    fits = tf.logical_and(tf.equal(height, image_size), tf.equal(width, image_size))
    return tf.cond(fits, lambda: clip, resize)


def decode_crops(encoded_frames, indices, windows, image_size):
    """Decodes `indices` once, then cuts every window of `windows` from the frames.

    Each frame is decoded once, inside the union of the windows plus a pixel
    of context, since libjpeg's chroma upsampling at the edge of a cropped
    decode differs from a whole frame's: the crops equal those of the
    whole decoded frame, pixel for pixel.

    Args:
        encoded_frames: string tensor `[video_frames]` of JPEGs.
        indices: int tensor `[num_frames]`; a static length.
        windows: int tensor `[num_crops, 4]` of y, x, height, width; a static count.
        image_size: side of the output frames.

    Returns:
        uint8 `[num_crops, num_frames, image_size, image_size, 3]`.
    """
    jpeg_shape = tf.io.extract_jpeg_shape(encoded_frames[0])
    top = tf.maximum(tf.reduce_min(windows[:, 0]) - 1, 0)
    left = tf.maximum(tf.reduce_min(windows[:, 1]) - 1, 0)
    bottom = tf.minimum(tf.reduce_max(windows[:, 0] + windows[:, 2]) + 1, jpeg_shape[0])
    right = tf.minimum(tf.reduce_max(windows[:, 1] + windows[:, 3]) + 1, jpeg_shape[1])
    union = tf.stack([top, left, bottom - top, right - left])
    chosen = tf.unstack(tf.gather(encoded_frames, indices), num=indices.shape[0])
    frames = tf.stack([tf.io.decode_and_crop_jpeg(jpeg, union, channels=3)
                       for jpeg in chosen])
    crops = []
    for window in tf.unstack(windows, num=windows.shape[0]):
        y, x, height, width = tf.unstack(window, num=4)
        crop = frames[:, y - top:y - top + height, x - left:x - left + width]
        crops.append(resize_square(crop, height, width, image_size))
    return tf.stack(crops)


def flip_left_right(clip):
    """Mirrors a clip `[T, H, W, C]`, as one reverse over `[T*H, W, C]` rows.

    A 3-D reverse is cheaper than a 4-D one (see BENCHMARKS.md).
    """
    shape = tf.shape(clip)
    rows = tf.reshape(clip, [-1, shape[2], shape[3]])
    flipped = tf.reshape(tf.reverse(rows, axis=[1]), shape)
    flipped.set_shape(clip.shape)
    return flipped


# ---------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------

# Evaluation of a model trained on random resized crops sees the central
# 0.875 of the short side, resized: TF Model Garden's video classification
# (Kinetics: short side to 256, centre 224 crop) and ImageNet's 256/224
# protocol, both for networks trained on Inception-style resized crops.
RESIZED_EVAL_FRACTION = 0.875


class RunClips(typing.NamedTuple):
    """The clips of one run, by use: what `ClipSpec.for_run` returns."""

    training: "ClipSpec"    # random clips and crops; also precise BatchNorm's
    validation: "ClipSpec"  # one fixed clip a video, each epoch
    evaluation: "ClipSpec"  # the final evaluation's and prediction's clips and crops


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What clips to cut from each video: the one home of the clip options.

    Args:
        num_frames: frames per clip.
        frame_step: stored frames between two clip frames. Defaults to 1.
        image_size: output side; frames are cropped and resized at read time.
            Defaults to 112.
        training: random clips and crops (and flips, with `flip`); else
            deterministic evenly spaced clips and fixed crops. Defaults to False.
        num_clips: evaluation clips per video, evenly spaced. Defaults to 1.
        num_crops: evaluation crops per clip, 1 (centre) or 3. Defaults to 1.
        step_jitter: training step varies by up to this much. Defaults to 0.
        crop_scale: training crop area range, as fractions, for Inception-style
            random resized crops; None for plain random crops of `image_size`
            (the R(2+1)D recipe, no rescaling). It also sets the scale of the
            evaluation crops, so that evaluation sees the scale training saw:
            with None, `image_size` windows of the stored frames (torchvision's
            and VMZ's R(2+1)D test protocol: 128x171 frames, centre 112 crop);
            else the central `RESIZED_EVAL_FRACTION` of the short side, resized.
            Defaults to `(preprocess.manifest.MIN_CROP_SCALE, 1)`.
        flip: random horizontal flips in training, on the CPU. train.py leaves
            this off because its model flips on the device
            (`model.network.layers.RandomFlipClips`). Defaults to False.
        samples_per_video: training clips cut from each video read, each with
            its own start, crop and flip: repeated augmentation (Hoffer et al.
            2020; PySlowFast's `AUG.NUM_SAMPLE`), which spreads the cost of
            reading and parsing a whole video over several clips. Defaults to 1.
    """

    num_frames: int
    frame_step: int = 1
    image_size: int = 112
    training: bool = False
    num_clips: int = 1
    num_crops: int = 1
    step_jitter: int = 0
    crop_scale: tuple | None = (manifest_lib.MIN_CROP_SCALE, 1.0)
    flip: bool = False
    samples_per_video: int = 1

    def __post_init__(self):
        if self.num_frames < 1 or self.frame_step < 1 or self.image_size < 1:
            raise ValueError("num_frames, frame_step and image_size must be positive")
        if self.num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, not {self.num_crops}")
        if self.num_clips < 1:
            raise ValueError(f"num_clips must be at least 1, not {self.num_clips}")
        if self.samples_per_video < 1:
            raise ValueError(
                f"samples_per_video must be at least 1, not {self.samples_per_video}")

    @classmethod
    def for_run(cls, config):
        """The clips of a `train.py` config, as a `RunClips`.

        The one mapping from a run's options to clips, which training, precise
        BatchNorm, validation, the final evaluation and prediction all use.
        """
        validation = cls(config["num_frames"], config["frame_step"], config["image_size"],
                         crop_scale=((config["crop_scale"], 1.0)
                                     if config["crop"] == "resized" else None))
        training = dataclasses.replace(
            validation, training=True, step_jitter=config["step_jitter"],
            samples_per_video=config["samples_per_video"])  # flips are the model's
        evaluation = dataclasses.replace(validation, num_clips=config["eval_clips"],
                                         num_crops=config["eval_crops"])
        return RunClips(training, validation, evaluation)

    @property
    def clips_per_video(self):
        if self.training:
            return self.samples_per_video
        return self.num_clips * self.num_crops

    @property
    def views(self):
        """The evaluation views in words and numbers, for `config.json` and `metrics.json`."""
        scale = ("stored scale" if self.crop_scale is None
                 else f"central {RESIZED_EVAL_FRACTION} of the short side, resized")
        return {"clips": self.num_clips, "crops": self.num_crops,
                "crop": f"{self.image_size}x{self.image_size}, {scale}"}

    def eval_side(self, height, width):
        """The side of the evaluation crop windows in a `height` x `width` frame."""
        short = tf.minimum(height, width)
        if self.crop_scale is None:
            return tf.minimum(short, self.image_size)
        return tf.cast(tf.round(RESIZED_EVAL_FRACTION * tf.cast(short, tf.float32)), tf.int32)

    # Uniform floats a training clip draws: step, start, 4 for the window, flip.
    DRAWS = 7

    def random_clip(self, frames, video_frames, height, width, draws):
        """One training clip from `DRAWS` uniform floats: start, step, crop window, flip.

        `frames` is every JPEG of the video, or a function that reads the
        JPEGs at given indices (the ranged read of an indexed shard).
        """
        indices = random_clip_indices(video_frames, self.num_frames, self.frame_step,
                                      self.step_jitter, draws[0:2])
        if self.crop_scale is None:
            # Frames are at least `image_size` (make_dataset checks): no resize.
            window = random_square_window(height, width, self.image_size, draws[2:4])
        else:
            window = random_crop_window(height, width, self.crop_scale, draws=draws[2:6])
        clip = decode_clip(*_chosen(frames, indices), window, self.image_size,
                           resize=self.crop_scale is not None)
        if self.flip:
            clip = tf.cond(draws[6] < 0.5, lambda: flip_left_right(clip), lambda: clip)
        return clip

    def cut(self, frames, height, width, seed=None, video_frames=None):
        """Clips `[clips_per_video, T, S, S, 3]` from a video's JPEG frames `[N]`.

        This is all the reader does once a record is parsed; prediction calls
        it on the frames of a new video directly. `seed` (training only) is a
        stateless seed `[2]`; None draws one. `frames` may also be a function
        that reads the JPEGs at given indices, with the video's length in
        `video_frames`.
        """
        if video_frames is None:
            video_frames = tf.shape(frames)[0]
        if self.training:
            draws = uniform_draws(seed, [self.samples_per_video, self.DRAWS])
            return tf.stack([self.random_clip(frames, video_frames, height, width, draws[i])
                             for i in range(self.samples_per_video)])
        indices = even_clip_indices(video_frames, self.num_frames, self.frame_step,
                                    self.num_clips)
        windows = square_crop_windows(height, width, self.num_crops,
                                      self.eval_side(height, width))
        if callable(frames):  # one read of every clip's frames
            frames, indices = frames(indices), tf.tile(
                tf.range(self.num_frames)[None], [self.num_clips, 1])
            return tf.concat([decode_crops(frames[c], indices[c], windows, self.image_size)
                              for c in range(self.num_clips)], axis=0)
        # Clip-major, crop-minor: each clip position's frames are decoded once.
        return tf.concat([decode_crops(frames, indices[c], windows, self.image_size)
                          for c in range(self.num_clips)], axis=0)

    def __call__(self, serialized, seed=None, with_video_id=True):
        """Cuts clips from one serialised record: `(clips, labels[, video_ids])`.

        Clips are `[n, T, S, S, 3]` with a label and video id each; with one
        clip per video, a single clip `[T, S, S, 3]` with a scalar label and id,
        so that no stack or unbatch copies it once more.
        """
        keys = (schema.HEIGHT, schema.WIDTH, schema.LABEL_INDEX)
        video = schema.parse_video_example(
            serialized, keys + ((schema.VIDEO_ID,) if with_video_id else ()))
        frames = video[schema.IMAGE_ENCODED]
        return self.clips(frames, tf.shape(frames)[0], tf.cast(video[schema.HEIGHT], tf.int32),
                          tf.cast(video[schema.WIDTH], tf.int32),
                          tf.cast(video[schema.LABEL_INDEX], tf.int32), seed,
                          video.get(schema.VIDEO_ID))

    def clips(self, frames, video_frames, height, width, label, seed=None, video_id=None):
        """What `__call__` yields, from a video's frames (or a reader of them) and facts."""
        count = self.clips_per_video
        if count > 1:
            clips = self.cut(frames, height, width, seed, video_frames)
            label = tf.fill([count], label)
            video_id = None if video_id is None else tf.fill([count], video_id)
        elif self.training:
            clips = self.random_clip(frames, video_frames, height, width,
                                     uniform_draws(seed, [self.DRAWS]))
        else:
            clips = self.cut(frames, height, width, video_frames=video_frames)[0]
        return (clips, label) if video_id is None else (clips, label, video_id)


def _chosen(frames, indices):
    """`(jpegs, indices into them)` for `decode_clip`: every frame and the clip's
    indices, or, from a reading function, just the clip's frames, in order."""
    if callable(frames):
        return frames(indices), tf.range(indices.shape[0])
    return frames, indices


def make_dataset(records_dir, split, spec, *, batch_size, shuffle_buffer=256,
                 with_video_id=False, skip_corrupt=False, repeat=False, seed=None,
                 reshuffle=True, deterministic=None, input_shard=None, ranged=None):
    """A `tf.data.Dataset` of `(clips, labels)` batches from a records folder.

    Records whose shards have indexes (`preprocess.index`) are read by range:
    each clip reads only its frames' bytes, and training visits the videos in
    a uniform random order of the whole split, drawn afresh each pass, with
    no shuffle buffer. Older records are read whole, shard by shard: a few
    shards at once through a buffer of `shuffle_buffer` videos, which is fair
    because the job writes every shard as a random sample of its split.

    Args:
        records_dir: a folder written by `python -m preprocess`.
        split: which split to read, e.g. `train`.
        spec: a `ClipSpec`: which clips to cut, and whether to train (random
            clips, shuffled) or evaluate (deterministic, in order). Repeated
            samples of one video come out next to each other, so mostly in one
            batch, as repeated augmentation intends.
        batch_size: clips per batch.
        shuffle_buffer: records (whole videos) held for shuffling. Defaults to 256.
        with_video_id: also yield each clip's video id, for per-video averaging.
            Defaults to False.
        skip_corrupt: skip unreadable records (with a logged warning) instead
            of failing. Defaults to False.
        repeat: repeat forever (training with `steps_per_epoch`). Defaults to False.
        seed: seed of file and record shuffling and of the training clips'
            random draws. Defaults to None.
        reshuffle: a new order on each pass; False repeats the first pass's
            order and clips (with `deterministic`), e.g. for statistics that
            must depend only on the seed. Defaults to True.
        deterministic: keep element order; defaults to `not spec.training`.
        input_shard: `(index, count)`: read only every count-th shard file from
            index, as one of `count` input pipelines (one per worker) does.
            Defaults to None, all shards.
        ranged: read clips by range from the shards' indexes: None where every
            shard has one, False to read records whole (a tf.data service
            cannot ship the ranged read, a Python function), True to require it.
            Defaults to None.

    Returns:
        A dataset of `(clips, labels)` or `(clips, labels, video_ids)`;
        clips uint8 `[batch, num_frames, image_size, image_size, 3]`, labels int32.

    Raises:
        ManifestError: the folder, split or schema version is unusable, or a
            shard is not the size the manifest recorded.
        IndexMismatchError: an index that does not belong to its shard.
    """
    records_dir = str(records_dir)
    training = spec.training
    manifest = manifest_lib.read_manifest(records_dir)
    shards = manifest_lib.shard_paths(records_dir, manifest, split)
    check_shards(shards, manifest["splits"][split], skip_corrupt)
    if input_shard:
        index, count = input_shard
        manifest_lib.check_shards_per_worker(records_dir, split, len(shards), count)
        shards = shards[index::count]
    if deterministic is None:
        deterministic = not training
    if training and spec.crop_scale is None:  # plain crops are never scaled down
        manifest_lib.check_frame_size(
            manifest, records_dir, spec.image_size,
            "plain random crops of {size} pixels do not fit the {smallest}-pixel frames in "
            "{records}", "lower image_size, or preprocess with a larger --image_size")

    table = None
    if ranged or (ranged is None and index_lib.has_indexes(shards)):
        try:
            table = index_lib.SplitIndex(shards)
        except index_lib.IndexMismatchError:
            if ranged or not skip_corrupt:
                raise
            # A shard of another size, read anyway as asked: whole, skipping what
            # fails its CRC.
    ranged = table is not None
    if ranged:
        videos = _indexed_videos(table, training, seed, reshuffle, repeat)
    else:
        videos = _whole_records(shards, training, seed, reshuffle, repeat, shuffle_buffer,
                                deterministic, skip_corrupt)
    single = spec.clips_per_video == 1
    if training:
        # One stateless seed per video read, from the dataset's seed: the same
        # seed gives the same clips, however many threads cut them.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=reshuffle)
        seeds = seeds.batch(2)
        videos = tf.data.Dataset.zip(videos, seeds)

    def cut(video, element_seed=None):
        if not ranged:
            return spec(video, element_seed, with_video_id=with_video_id)
        return spec.clips(
            lambda indices: table.frames(video["shard"], video["frames_at"], indices),
            video["video_frames"], video["height"], video["width"], video["label"],
            element_seed, video["video_id"] if with_video_id else None)

    # The decode is the costly step: run it on all cores.
    dataset = videos.map(cut, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if ranged and skip_corrupt:
        dataset = dataset.ignore_errors(log_warning=True)  # frames that fail their CRC
    if not single:
        dataset = dataset.unbatch()  # one element per clip
    dataset = dataset.batch(batch_size, drop_remainder=training and repeat,
                            num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    # Prefetch lets the next batch decode while the model runs on this one.
    return dataset.prefetch(AUTOTUNE)


def _whole_records(shards, training, seed, reshuffle, repeat, shuffle_buffer,
                   deterministic, skip_corrupt):
    """Serialised records, read whole: shuffled across a few shards through a buffer."""
    files = tf.data.Dataset.from_tensor_slices(shards)
    if training:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=reshuffle)

    def read_shard(path):
        records = tf.data.TFRecordDataset(path, buffer_size=8 << 20)
        return records.ignore_errors(log_warning=True) if skip_corrupt else records

    # Parallel interleave: several shards are read at once, which hides file
    # system latency (GCS) and mixes videos from different shards.
    records = files.interleave(read_shard, cycle_length=min(len(shards), 8),
                               num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if training:
        # Shuffle still-encoded videos: cheap to hold, and nothing decoded is thrown
        # away. Fair because every shard is a random sample of its split.
        records = records.shuffle(shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=reshuffle)
    return records.repeat() if repeat else records


def _indexed_videos(table, training, seed, reshuffle, repeat):
    """Each video's place in its shard and its facts, from the shards' indexes.

    Training visits the videos in a random permutation of the whole split
    (`index_shuffle`, stateless: no buffer, however many videos), a new one
    each pass unless `reshuffle` is False; evaluation in file order.
    """
    records = table.records
    columns = {name: tf.constant(column) for name, column in (
        ("shard", table.shard), ("frames_at", records["frames_at"].astype(np.int64)),
        ("video_frames", records["num_frames"].astype(np.int32)),
        ("label", records["label"].astype(np.int32)),
        ("height", records["height"].astype(np.int32)),
        ("width", records["width"].astype(np.int32)),
        ("video_id", table.video_ids.astype(str) if len(records) else np.zeros(0, str)))}
    count = len(records)
    if not training:
        passes = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
        order = passes.flat_map(lambda _: tf.data.Dataset.range(count))
    else:
        key = seed if seed is not None else np.random.randint(2**31)
        # A key a pass: drawn afresh each pass (and each iteration of the dataset)
        # to reshuffle, else one key, the same order every pass.
        keys = (tf.data.Dataset.random(seed=key, rerandomize_each_iteration=True)
                if reshuffle else tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat())
        keys = keys if repeat else keys.take(1)

        def permuted(pass_key):
            pass_seed = tf.stack([tf.constant(key, tf.int64), pass_key])
            return tf.data.Dataset.range(count).map(
                lambda i: tf.random.experimental.index_shuffle(i, pass_seed, count - 1))

        order = keys.flat_map(permuted)
    return order.map(lambda i: {name: tf.gather(column, i) for name, column in columns.items()})


def check_shards(paths, split_info, skip_corrupt=False):
    """Fails fast, naming the file, when a shard is missing or not its recorded size.

    With `skip_corrupt`, a shard of another size is read anyway: its
    unreadable records are skipped, as asked.
    """
    for path, expected in zip(paths, split_info.get("shard_bytes", [None] * len(paths))):
        if not tf.io.gfile.exists(path):
            raise manifest_lib.ManifestError(
                f"shard {path} is missing; copy it again or preprocess again")
        size = tf.io.gfile.stat(path).length
        if expected is not None and size != expected and not skip_corrupt:
            raise manifest_lib.ManifestError(
                f"shard {path} is {size} bytes but was written as {expected}: it is "
                "truncated or altered; copy it again, or read with skip_corrupt=True")


def find_corrupt_shards(paths):
    """Reads shards fully and returns `{path: error}` for those that fail their CRC.

    TensorFlow's read error does not name the file; after one, this does.
    """
    corrupt = {}
    for path in paths:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except tf.errors.DataLossError as error:
            corrupt[path] = error.message.split("\n")[0]
    return corrupt


def describe_read_error(error, records_dir):
    """The one line for an error reading `records_dir`'s frames, or None if it is not one.

    A whole record that fails its CRC (`DataLossError`, shards found by
    `describe_data_loss`), or a ranged read's corrupt frame or shard cut
    short (its own line, carried out of the pipeline by TensorFlow's error).
    """
    if isinstance(error, tf.errors.DataLossError):
        return describe_data_loss(records_dir)
    if isinstance(error, tf.errors.OpError):
        return index_lib.corrupt_frame(error.message)
    return None


def describe_data_loss(records_dir):
    """Names the shards that fail their CRC, which TensorFlow's own error does not."""
    manifest = manifest_lib.read_manifest(records_dir)
    paths = [os.path.join(records_dir, shard) for info in manifest["splits"].values()
             for shard in info["shards"]]
    corrupt = find_corrupt_shards(paths)
    names = ", ".join(f"{path} ({reason})" for path, reason in corrupt.items())
    return (f"corrupt records in {names or records_dir}; copy or preprocess them again, "
            "or pass --skip_corrupt to skip unreadable records")
