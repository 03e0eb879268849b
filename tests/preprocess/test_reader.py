"""The tf.data reader: clip shapes, temporal order and step, looping, crops, errors.

The fixture videos paint each frame with a grey level that encodes its own
index, so a decoded clip tells which source frames it holds.
"""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from preprocess import index as index_lib
from preprocess import manifest as manifest_lib
from preprocess import reader, schema

from records import decode_frames, write_records

LEVEL0, LEVEL_STEP = 10, 5  # frame i is painted 10 + 5 * i
LENGTHS = {"v_Count_g01_c01": 40, "v_Count_g02_c01": 33, "v_Short_g01_c01": 5}


class FrameIndex:
    """Recovers the source frame index of each frame from its grey level.

    Args:
        levels: the mean level of each stored frame, read straight from the
            record (JPEG shifts the painted levels by a little, so they are
            measured, not assumed).
    """

    def __init__(self, levels):
        self.levels = np.asarray(levels)

    def __call__(self, frames):
        means = np.asarray(frames, np.float32).mean(axis=(-3, -2, -1))
        return np.abs(means[..., None] - self.levels).argmin(axis=-1)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The three videos of `LENGTHS` (classes Count and Short), 48x64 frames, in two shards."""
    videos = [dict(video_id=video_id, class_name=video_id.split("_")[1],
                   frames=np.stack([np.full((48, 64, 3), LEVEL0 + LEVEL_STEP * i, np.uint8)
                                    for i in range(length)]))
              for video_id, length in LENGTHS.items()]
    return write_records(tmp_path_factory.mktemp("index_videos") / "records", videos,
                         num_shards=2)


@pytest.fixture(scope="module")
def frame_index(records):
    """A `FrameIndex` calibrated on the longest video's stored frames."""
    shards = manifest_lib.shard_paths(str(records), manifest_lib.read_manifest(str(records)),
                                      "all")
    for serialized in tf.data.TFRecordDataset(shards):
        video = schema.parse_video_example(serialized)
        if video[schema.VIDEO_ID].numpy() == b"v_Count_g01_c01":
            levels = decode_frames(video[schema.IMAGE_ENCODED], tf.range(40)).numpy()
            levels = levels.mean(axis=(1, 2, 3))
    assert np.all(np.diff(levels) >= 3)  # levels stay apart after the codecs
    return FrameIndex(levels)


def _videos(dataset):
    clips, labels, ids = [], [], []
    for c, l, v in dataset:
        clips.extend(c.numpy())
        labels.extend(l.numpy())
        ids.extend(x.decode() for x in v.numpy())
    return clips, labels, ids


def test_shapes_dtypes_and_labels(records):
    classes = manifest_lib.read_manifest(str(records))["classes"]
    spec = reader.ClipSpec(num_frames=4, frame_step=2, image_size=32, training=True)
    dataset = reader.make_dataset(records, "all", spec, batch_size=2, with_video_id=True)
    clips, labels, ids = _videos(dataset)
    assert len(clips) == 3
    assert clips[0].shape == (4, 32, 32, 3) and clips[0].dtype == np.uint8
    for label, video_id in zip(labels, ids):
        assert classes[label] == video_id.split("_")[1]
    spec = reader.ClipSpec(num_frames=4, image_size=32, training=False)
    batch, label_batch = next(iter(reader.make_dataset(records, "all", spec, batch_size=2)))
    assert batch.shape == (2, 4, 32, 32, 3) and batch.dtype == tf.uint8
    assert label_batch.dtype == tf.int32


def test_evaluation_clip_is_centred_in_order_at_the_step(records, frame_index):
    spec = reader.ClipSpec(num_frames=8, frame_step=3, image_size=32, training=False)
    dataset = reader.make_dataset(records, "all", spec, batch_size=4, with_video_id=True)
    clips, _, ids = _videos(dataset)
    got = dict(zip(ids, (frame_index(c).tolist() for c in clips)))
    assert got["v_Count_g01_c01"] == list(range(9, 31, 3))  # (40 - 22) // 2 = 9
    assert got["v_Count_g02_c01"] == list(range(5, 27, 3))  # (33 - 22) // 2 = 5
    # A video shorter than the clip loops its frames instead of padding black.
    assert got["v_Short_g01_c01"] == [0, 3, 1, 4, 2, 0, 3, 1]


def test_training_clips_are_random_but_ordered(records, frame_index):
    spec = reader.ClipSpec(num_frames=6, frame_step=2, image_size=24, training=True,
                           flip=False)
    dataset = reader.make_dataset(records, "all", spec, batch_size=3, with_video_id=True,
                                  repeat=True)
    starts = set()
    for clips, _, ids in dataset.take(12):
        for clip, video_id in zip(clips.numpy(), ids.numpy()):
            index = frame_index(clip)
            if video_id.decode() == "v_Count_g01_c01":
                assert np.all(np.diff(index) == 2), index
                # The whole 11-frame span fits: a 40-frame video starts by frame 29.
                assert index[0] <= 40 - 11, index
                starts.add(index[0])
    assert len(starts) > 3


def test_step_jitter_changes_the_step(records, frame_index):
    spec = reader.ClipSpec(num_frames=4, frame_step=3, image_size=16, training=True,
                           step_jitter=2)
    dataset = reader.make_dataset(records, "all", spec, batch_size=3, with_video_id=True,
                                  repeat=True)
    steps = set()
    for clips, _, ids in dataset.take(15):
        for clip, video_id in zip(clips.numpy(), ids.numpy()):
            if video_id.decode() == "v_Count_g01_c01":
                steps.update(np.diff(frame_index(clip)).tolist())
    assert len(steps) > 1 and steps <= {1, 2, 3, 4, 5}


def test_multi_clip_evaluation_spans_the_video(records, frame_index):
    spec = reader.ClipSpec(num_frames=4, frame_step=2, image_size=24, training=False,
                           num_clips=3, num_crops=3)
    dataset = reader.make_dataset(records, "all", spec, batch_size=32, with_video_id=True)
    clips, labels, ids = _videos(dataset)
    assert len(clips) == 3 * 9
    assert ids.count("v_Count_g01_c01") == 9
    starts = sorted({int(frame_index(c)[0]) for c, v in zip(clips, ids)
                     if v == "v_Count_g01_c01"})
    assert starts == [0, 16, 33]  # last start 40 - 7 = 33; 16.5 rounds to even


def test_evaluation_is_deterministic(records):
    def read():
        spec = reader.ClipSpec(num_frames=5, frame_step=2, image_size=40, training=False,
                               num_clips=2, num_crops=3)
        dataset = reader.make_dataset(records, "all", spec, batch_size=2)
        return np.concatenate([c.numpy() for c, _ in dataset])
    np.testing.assert_array_equal(read(), read())


def test_ranged_and_whole_record_reads_cut_the_same_clips(records):
    # The job indexes its shards and the reader reads clips by range from them;
    # records read whole (older records, a tf.data service) must give the same clips.
    spec = reader.ClipSpec(num_frames=5, frame_step=3, image_size=32, num_clips=2, num_crops=3)

    def read(ranged):
        dataset = reader.make_dataset(records, "all", spec, batch_size=4, with_video_id=True,
                                      ranged=ranged)
        return _videos(dataset)

    (ranged_clips, ranged_labels, ranged_ids), (whole_clips, whole_labels, whole_ids) = (
        read(True), read(False))
    assert ranged_ids == whole_ids and ranged_labels == whole_labels
    np.testing.assert_array_equal(np.stack(ranged_clips), np.stack(whole_clips))


def test_image_size_is_chosen_at_read_time(records):
    manifest = manifest_lib.read_manifest(str(records))
    assert manifest["geometry"]["frame_sizes"] == [[48, 64]]
    for size in (24, 48, 64):
        spec = reader.ClipSpec(num_frames=2, image_size=size, training=False)
        clip, _ = next(iter(reader.make_dataset(records, "all", spec, batch_size=1)))
        assert clip.shape == (1, 2, size, size, 3)


def test_transforms_eager_equal_in_dataset_map(records):
    shard = manifest_lib.shard_paths(str(records), manifest_lib.read_manifest(str(records)),
                                     "all")[0]
    serialized = next(iter(tf.data.TFRecordDataset(shard)))
    spec = reader.ClipSpec(num_frames=6, frame_step=2, image_size=40, training=False,
                           num_clips=2, num_crops=3)
    eager_clips, eager_labels, _ = spec(serialized)
    mapped = tf.data.Dataset.from_tensors(serialized).map(spec)
    graph_clips, graph_labels, _ = next(iter(mapped))
    np.testing.assert_array_equal(eager_clips.numpy(), graph_clips.numpy())
    np.testing.assert_array_equal(eager_labels.numpy(), graph_labels.numpy())

    def indices(n):
        return reader.even_clip_indices(n, 4, 3, num_clips=3)
    np.testing.assert_array_equal(
        indices(tf.constant(20)).numpy(),
        next(iter(tf.data.Dataset.from_tensors(20).map(indices))).numpy())
    windows = reader.square_crop_windows(tf.constant(48), tf.constant(64), 3).numpy()
    np.testing.assert_array_equal(windows, [[0, 0, 48, 48], [0, 8, 48, 48], [0, 16, 48, 48]])


def test_plain_random_crops_keep_pixels_unscaled(records, frame_index):
    # 48x64 frames, 40x40 crops: no rescaling, so every frame stays flat at
    # its own level and the clip keeps its temporal order.
    spec = reader.ClipSpec(num_frames=5, frame_step=2, image_size=40, training=True,
                           crop_scale=None)
    dataset = reader.make_dataset(records, "all", spec, batch_size=3, with_video_id=True,
                                  repeat=True)
    clips, _, ids = next(iter(dataset))
    for clip, video_id in zip(clips.numpy(), ids.numpy()):
        assert clip.shape == (5, 40, 40, 3)
        if video_id.decode().startswith("v_Count"):
            assert np.all(np.diff(frame_index(clip)) == 2)
    window = reader.random_square_window(tf.constant(48), tf.constant(64), 40).numpy()
    assert window[2] == window[3] == 40 and window[0] <= 8 and window[1] <= 24


def test_flip_mirrors_each_frame():
    clip = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), np.uint8)
    np.testing.assert_array_equal(reader.flip_left_right(tf.constant(clip)).numpy(),
                                  clip[:, :, ::-1, :])
    mapped = tf.data.Dataset.from_tensors(clip).map(reader.flip_left_right)
    flipped = next(iter(mapped))
    assert flipped.shape == clip.shape
    np.testing.assert_array_equal(flipped.numpy(), clip[:, :, ::-1, :])


def test_samples_per_video_cuts_several_clips_from_one_read(records, frame_index):
    spec = reader.ClipSpec(num_frames=4, frame_step=2, image_size=24, training=True,
                           samples_per_video=4, flip=False)
    dataset = reader.make_dataset(records, "all", spec, batch_size=4, with_video_id=True,
                                  seed=1)
    clips, labels, ids = _videos(dataset)
    assert len(clips) == 3 * 4  # an epoch is still one read of every video
    assert sorted(set(ids)) == sorted(LENGTHS)
    starts = set()
    for video_id in LENGTHS:
        mine = [i for i, v in enumerate(ids) if v == video_id]
        assert len(mine) == 4 and len({labels[i] for i in mine}) == 1
        if video_id == "v_Count_g01_c01":
            for i in mine:
                index = frame_index(clips[i])
                assert np.all(np.diff(index) == 2), index
                starts.add(int(index[0]))
    assert len(starts) > 1  # each sample has its own start
    with pytest.raises(ValueError, match="samples_per_video"):
        reader.ClipSpec(4, 2, 24, training=True, samples_per_video=0)


@pytest.mark.parametrize("scale", [(0.4, 1.0), (0.08, 1.0), (1.0, 1.0)])
def test_random_crop_window_always_fits(scale):
    corners = [np.zeros(4), np.full(4, np.nextafter(np.float32(1), np.float32(0)))]
    draws = corners + [reader.uniform_draws(seed, [4]) for seed in range(50)]
    for draw in draws:
        y, x, h, w = reader.random_crop_window(tf.constant(48), tf.constant(64), scale,
                                               draws=tf.constant(draw, tf.float32)).numpy()
        assert 0 <= y and 0 <= x and y + h <= 48 and x + w <= 64 and h > 0 and w > 0


def _copy(records, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(records, copy)
    return copy


def test_bad_requests_say_what_is_wrong(records, tmp_path):
    spec, kwargs = reader.ClipSpec(num_frames=2, image_size=16), dict(batch_size=1)
    with pytest.raises(manifest_lib.ManifestError, match="no split 'val'.*has all"):
        reader.make_dataset(records, "val", spec, **kwargs)
    with pytest.raises(manifest_lib.ManifestError, match="no manifest.json"):
        reader.make_dataset(tmp_path, "all", spec, **kwargs)
    too_large = reader.ClipSpec(num_frames=2, image_size=64, training=True, crop_scale=None)
    with pytest.raises(manifest_lib.ManifestError, match="do not fit the 48-pixel frames"):
        reader.make_dataset(records, "all", too_large, **kwargs)
    copy = _copy(records, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = schema.SCHEMA_VERSION + 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(manifest_lib.ManifestError, match="schema version"):
        reader.make_dataset(copy, "all", spec, **kwargs)
    manifest["schema_version"] = schema.SCHEMA_VERSION
    manifest["splits"]["all"]["num_videos"] = 0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(manifest_lib.ManifestError, match="has no videos"):
        reader.make_dataset(copy, "all", spec, **kwargs)


def test_corrupt_shards_are_named_or_skipped(records, tmp_path):
    # Records read whole, as before indexes (their message says to delete them):
    # TFRecord's own CRCs find the damage, record by record.
    copy = _copy(records, tmp_path)
    for path in (copy / "all").glob("*" + index_lib.SUFFIX):
        path.unlink()
    spec, kwargs = reader.ClipSpec(num_frames=2, image_size=16), dict(batch_size=1)
    shards = sorted((copy / "all").glob("*" + manifest_lib.RECORD_SUFFIX))
    truncated = shards[0]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(manifest_lib.ManifestError, match=truncated.name):
        reader.make_dataset(copy, "all", spec, **kwargs)
    # Asked to skip what cannot be read, the reader reads the truncated shard's rest.
    assert 0 < len(list(reader.make_dataset(copy, "all", spec, skip_corrupt=True,
                                            **kwargs))) < 3
    # Same size, flipped bytes: only the CRC check can tell.
    truncated.write_bytes(data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:])
    with pytest.raises(tf.errors.DataLossError):
        list(reader.make_dataset(copy, "all", spec, **kwargs))
    assert list(reader.find_corrupt_shards([str(s) for s in shards])) == [str(truncated)]
    survivors = list(reader.make_dataset(copy, "all", spec, skip_corrupt=True, **kwargs))
    assert 0 < len(survivors) < 3


def _textured_video(height, width, frames=6, seed=0):
    """JPEG frames of noise (so that any shift of a crop shows) and their decoded pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (frames, height, width, 3), np.uint8)
    jpegs = tf.stack([tf.io.encode_jpeg(frame, quality=95) for frame in pixels])
    decoded = np.stack([tf.io.decode_jpeg(jpeg, channels=3).numpy() for jpeg in jpegs])
    return jpegs, decoded


@pytest.mark.parametrize("height, width, starts", [
    (48, 64, [(8, 0), (8, 16), (8, 32)]),    # landscape: left, centre, right
    (64, 48, [(0, 8), (16, 8), (32, 8)]),    # portrait: top, centre, bottom
])
def test_random_crop_runs_evaluate_at_the_stored_scale(height, width, starts):
    # The R(2+1)D presets train on plain random crops: evaluation crops the
    # same 32-pixel windows of the stored frames, pixel for pixel, no rescaling.
    config = dict(num_frames=3, frame_step=2, image_size=32, crop="random", crop_scale=0.4,
                  step_jitter=0, samples_per_video=1, eval_clips=1, eval_crops=3)
    train_spec, val_spec, test_spec = reader.ClipSpec.for_run(config)
    assert train_spec.crop_scale is None and train_spec.training
    jpegs, decoded = _textured_video(height, width)
    frames = reader.even_clip_indices(6, 3, 2).numpy()[0].tolist()
    clips = test_spec.cut(jpegs, tf.constant(height), tf.constant(width)).numpy()
    assert clips.shape == (3, 3, 32, 32, 3)
    for clip, (y, x) in zip(clips, starts):
        np.testing.assert_array_equal(clip, decoded[frames, y:y + 32, x:x + 32])
    centre = val_spec.cut(jpegs, tf.constant(height), tf.constant(width)).numpy()
    np.testing.assert_array_equal(centre[0], clips[1])
    assert test_spec.views == {"clips": 1, "crops": 3, "crop": "32x32, stored scale"}


def test_resized_crop_runs_evaluate_on_the_central_seven_eighths():
    config = dict(num_frames=2, frame_step=1, image_size=24, crop="resized", crop_scale=0.4,
                  step_jitter=0, samples_per_video=1, eval_clips=1, eval_crops=1)
    spec = reader.ClipSpec.for_run(config).evaluation
    jpegs, decoded = _textured_video(48, 64, frames=2)
    side = round(reader.RESIZED_EVAL_FRACTION * 48)  # 42
    y, x = (48 - side) // 2, (64 - side) // 2
    window = tf.constant(decoded[:, y:y + side, x:x + side], tf.float32)
    expected = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(window, [24, 24])), 0, 255),
                       tf.uint8).numpy()
    got = spec.cut(jpegs, tf.constant(48), tf.constant(64)).numpy()[0]
    np.testing.assert_array_equal(got, expected)


def test_training_clips_depend_only_on_the_seed_with_parallel_cuts(records):
    spec = reader.ClipSpec(num_frames=4, frame_step=2, image_size=24, training=True,
                           samples_per_video=2, step_jitter=1, flip=True)

    def read(seed):
        dataset = reader.make_dataset(records, "all", spec, batch_size=3, repeat=True,
                                      seed=seed, deterministic=True, reshuffle=False)
        return np.concatenate([clips.numpy() for clips, _ in dataset.take(4)])

    first = read(7)
    np.testing.assert_array_equal(first, read(7))
    assert not np.array_equal(first, read(8))
    # The cut holds no stateful random op, so TensorFlow keeps the map
    # parallel under op determinism instead of running it serially.
    traced = tf.function(spec).get_concrete_function(
        tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int64))
    stateful = [op.type for op in traced.graph.get_operations() if op.op_def.is_stateful]
    assert not [name for name in stateful if "Random" in name], stateful


def test_each_worker_reads_its_own_shards(records):
    spec = reader.ClipSpec(4, 1, 32)
    ids = []
    for index in (0, 1):
        dataset = reader.make_dataset(records, "all", spec, batch_size=4,
                                      with_video_id=True, input_shard=(index, 2))
        ids.append({v.decode() for _, _, batch in dataset for v in batch.numpy()})
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert ids[0] | ids[1] == set(LENGTHS)
    with pytest.raises(manifest_lib.ManifestError, match="preprocess again with --num_shards 3"):
        reader.make_dataset(records, "all", spec, batch_size=4, input_shard=(0, 3))


@pytest.fixture(scope="module")
def noise_records(tmp_path_factory):
    """Twelve videos of random pixels (so every crop window tells), in three shards."""
    rng = np.random.default_rng(0)
    videos = [dict(video_id=f"v_Noise{i % 2}_g{i + 1:02d}_c01", class_name=f"Noise{i % 2}",
                   frames=rng.integers(0, 256, (12 + i, 40, 56, 3), dtype=np.uint8))
              for i in range(12)]
    return write_records(tmp_path_factory.mktemp("noise") / "records", videos, num_shards=3)


@pytest.mark.parametrize("crop_scale", [None, (0.4, 1.0)])
def test_ranged_training_clips_are_the_whole_reads_pixel_for_pixel(noise_records, crop_scale):
    # The same draws give the same pixels whichever way the frames were read.
    shards = manifest_lib.shard_paths(str(noise_records),
                                      manifest_lib.read_manifest(str(noise_records)), "all")
    table = index_lib.SplitIndex(shards)
    spec = reader.ClipSpec(num_frames=4, frame_step=2, image_size=24, training=True,
                           crop_scale=crop_scale, flip=True, samples_per_video=2, step_jitter=1)
    for i, serialized in enumerate(tf.data.TFRecordDataset(shards)):
        seed = tf.constant([7, i])
        whole, whole_labels = spec(serialized, seed, with_video_id=False)
        row = table.records[i]
        ranged, ranged_labels = spec.clips(
            lambda indices: table.frames(table.shard[i], row["frames_at"], indices),
            int(row["num_frames"]), int(row["height"]), int(row["width"]), int(row["label"]),
            seed)
        np.testing.assert_array_equal(whole.numpy(), ranged.numpy())
        np.testing.assert_array_equal(whole_labels.numpy(), ranged_labels.numpy())


def test_ranged_training_visits_every_video_once_a_pass(noise_records):
    spec = reader.ClipSpec(num_frames=1, image_size=8, training=True, crop_scale=None)

    def passes(seed, reshuffle=True, count=3):
        dataset = reader.make_dataset(noise_records, "all", spec, batch_size=12, repeat=True,
                                      seed=seed, reshuffle=reshuffle, deterministic=True,
                                      with_video_id=True)
        return [[v.decode() for v in ids.numpy()] for _, _, ids in dataset.take(count)]

    first = passes(seed=3)
    assert all(sorted(order) == sorted(first[0]) and len(set(order)) == 12 for order in first)
    assert first[0] != first[1] != first[2]  # a new permutation of the whole split each pass
    assert passes(seed=3) == first and passes(seed=4) != first
    same = passes(seed=3, reshuffle=False)
    assert same[0] == same[1] == same[2]


def test_ranged_training_reshuffles_each_iteration_without_repeat(noise_records):
    # As Keras's fit iterates a finite dataset once an epoch.
    spec = reader.ClipSpec(num_frames=1, image_size=8, training=True, crop_scale=None)

    def epochs(reshuffle):
        dataset = reader.make_dataset(noise_records, "all", spec, batch_size=12, seed=5,
                                      reshuffle=reshuffle, deterministic=True,
                                      with_video_id=True)
        return [[v.decode() for v in next(iter(dataset))[2].numpy()] for _ in range(3)]

    shuffled, fixed = epochs(True), epochs(False)
    assert sorted(shuffled[0]) == sorted(shuffled[1]) and shuffled[0] != shuffled[1]
    assert fixed[0] == fixed[1] == fixed[2]
