"""The shard index: written with each shard, exact to the records, refused when it does not fit."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from preprocess import index, schema, shards


def _jpegs(rng, count):
    """Distinct byte strings standing in for JPEGs (the index never decodes them)."""
    return [rng.bytes(int(rng.integers(50, 400))) for _ in range(count)]


def _write(folder, videos, num_shards=2):
    """Writes `videos` ({id: frames}) through the job's fragment and shard writers."""
    writer = shards.FragmentWriter(str(folder))
    for label, (video_id, frames) in enumerate(videos.items()):
        example = schema.encode_video_example(
            frames, label=label, label_text=f"c{label}", video_id=video_id, group=-1,
            clip=-1, height=16, width=24, fps=25.0)
        writer.write("train", video_id, example, (f"c{label}", len(frames), 16, 24))
    plans = shards.plan_shards(writer.close(), str(folder), {"train": num_shards})
    return [shards.write_shard(plan)["path"] for plan in plans]


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(0)
    videos = {f"v{i:02d}": _jpegs(rng, int(rng.integers(5, 40))) for i in range(12)}
    return videos, _write(tmp_path, videos)


def test_an_index_lies_beside_each_shard_and_a_tfrecord_glob_skips_it(written):
    _, paths = written
    for path in paths:
        assert os.path.exists(index.index_path(path))
        assert index.index_path(path).endswith(".index") and path.endswith(".tfrecord")
    assert sorted(tf.io.gfile.glob(os.path.join(os.path.dirname(paths[0]), "*.tfrecord"))) \
        == sorted(paths)


def test_ranged_reads_give_the_bytes_a_sequential_read_parses(written):
    videos, paths = written
    table = index.SplitIndex(paths)
    # The records in file order, as TFRecordDataset reads them.
    sequential = [schema.parse_video_example(r) for r in tf.data.TFRecordDataset(paths)]
    assert list(table.video_ids) == [v[schema.VIDEO_ID].numpy().decode() for v in sequential]
    rng = np.random.default_rng(1)
    for i, record in enumerate(table.records):
        frames = sequential[i][schema.IMAGE_ENCODED].numpy()
        assert record["num_frames"] == len(frames) == len(videos[table.video_ids[i]])
        assert record["label"] == int(sequential[i][schema.LABEL_INDEX])
        assert (record["height"], record["width"]) == (16, 24)
        start = int(rng.integers(0, len(frames) - 3))
        picks = np.arange(start, len(frames), 2)[:4]
        got = table.read_frames(table.shard[i], record["frames_at"], picks)
        assert list(got) == [frames[p] for p in picks]
        rows = np.stack([picks, picks])  # several clips of one video at once
        assert table.read_frames(table.shard[i], record["frames_at"], rows).shape == (2, len(picks))


def test_an_index_of_another_shard_or_a_cut_shard_is_refused_in_one_line(written, tmp_path):
    _, paths = written
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for a, b in ((0, 1), (1, 0)):  # each shard with the other's index
        shutil.copy(paths[a], swapped / os.path.basename(paths[a]))
        shutil.copy(index.index_path(paths[b]), swapped / os.path.basename(
            index.index_path(paths[a])))
    with pytest.raises(index.IndexMismatchError, match="does not belong to") as error:
        index.SplitIndex([str(swapped / os.path.basename(p)) for p in paths])
    assert "\n" not in str(error.value)
    with open(paths[1], "r+b") as handle:
        handle.truncate(os.path.getsize(paths[1]) - 100)
    with pytest.raises(index.IndexMismatchError, match="truncated, replaced"):
        index.SplitIndex(paths)


def test_a_corrupt_frame_fails_its_crc(written):
    _, paths = written
    table = index.SplitIndex(paths)
    record = table.records[0]
    frame_table = np.frombuffer(open(index.index_path(paths[0]), "rb").read()[
        int(record["frames_at"]):int(record["frames_at"]) + index.FRAME.itemsize], index.FRAME)
    with open(paths[0], "r+b") as handle:  # flip a byte inside frame 0, size unchanged
        handle.seek(int(frame_table["offset"][0]) + 10)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(index.IndexMismatchError, match="fails its CRC"):
        table.read_frames(0, record["frames_at"], np.array([0, 1]))
