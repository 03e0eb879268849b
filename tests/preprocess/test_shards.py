"""Shards cut from fragments: TFRecord framing, a seeded fair order, balanced cuts, copies."""

import collections
import math
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import tensorflow as tf

from conftest import REPO
from preprocess import manifest as manifest_lib
from preprocess import reader, schema, shards


def _example(payload):
    """A record of ours whose one frame is `payload`, and whose video id is its hex."""
    return schema.encode_video_example([payload], label=0, label_text="c",
                                       video_id=payload.hex(), group=-1, clip=-1,
                                       height=2, width=3, fps=25.0)


def _fragments(tmp_path, layout):
    """Writes fragments through `FragmentWriter`: `layout` is a list of bundles,
    each a list of `(split, payload)`."""
    fragments = []
    for bundle in layout:
        writer = shards.FragmentWriter(str(tmp_path))
        for split, payload in bundle:
            writer.write(split, payload.hex(), _example(payload), ("c", 1, 2, 3))
        fragments += writer.close()
    return fragments


def _read(path):
    """The payloads of a shard's records, read by TensorFlow (which checks every CRC)."""
    records = [record.numpy() for record in tf.data.TFRecordDataset(str(path))]
    return [bytes.fromhex(schema.describe_video_example(r)[0][schema.VIDEO_ID])
            for r in records]


def test_framing_is_tfrecord():
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"framing-{os.getpid()}.tfrecord")
    payloads = [b"", b"x", os.urandom(100_000)]
    with open(path, "wb") as out:
        for payload in payloads:
            out.write(shards.tfrecord(payload))
    try:
        # TensorFlow checks both CRCs of every record.
        assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == payloads
    finally:
        os.remove(path)


def test_plans_cover_every_record_once_in_balanced_shards(tmp_path):
    sizes = [5, 50, 7, 30, 1, 12, 40, 9]
    layout = [[("train", b"a" * sizes[0] + b"0"), ("train", b"b" * sizes[1] + b"1"),
               ("test", b"t0")],
              [("train", b"c" * sizes[2] + b"2"), ("train", b"d" * sizes[3] + b"3")],
              [("train", b"e" * size + str(i).encode()) for i, size in enumerate(sizes[4:], 4)]]
    fragments = _fragments(tmp_path, layout)
    plans = shards.plan_shards(fragments, str(tmp_path), {"train": 3, "test": 0})
    assert [os.path.basename(p.path) for p in plans] == [
        "test-00000-of-00001.tfrecord", "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    entries = [shards.write_shard(plan) for plan in plans]
    train = [record for e in entries[1:] for record in _read(e["path"])]
    expected = sorted(payload for bundle in layout for split, payload in bundle
                      if split == "train")
    assert sorted(train) == expected  # every record once
    assert [e["records"] for e in entries] == [1] + [len(_read(e["path"])) for e in entries[1:]]
    assert [e["bytes"] for e in entries] == [os.path.getsize(e["path"]) for e in entries]
    shard_bytes = [e["bytes"] for e in entries[1:]]
    assert max(shard_bytes) - min(shard_bytes) <= max(len(_example(p)) for p in expected) + 16


def test_shard_count_is_capped_and_sized_by_bytes(tmp_path, monkeypatch):
    fragments = _fragments(tmp_path, [[("all", b"v" * 1000 + bytes([i])) for i in range(5)]])
    plans = shards.plan_shards(fragments, str(tmp_path), {"all": 9})
    assert len(plans) == 5 and all(p.records == 1 for p in plans)  # never an empty shard
    # Cuts follow bytes, not record counts: a big record fills a shard alone.
    # (In id order here, to see the cuts alone.)
    monkeypatch.setattr(shards, "shuffle_key",
                        lambda seed, split, video_id: bytes.fromhex(video_id))
    skewed = _fragments(tmp_path, [[("all", b"big" * 100)] + [("all", bytes([i])) for i in
                                                                range(5)]])
    assert [p.records for p in shards.plan_shards(skewed, str(tmp_path), {"all": 2})] == [5, 1]
    monkeypatch.setattr(shards, "TARGET_SHARD_BYTES", 2.1 * fragments[0].sizes[0])
    plans = shards.plan_shards(fragments, str(tmp_path), {"all": 0})
    assert [p.records for p in plans] == [2, 2, 1]


def test_the_launcher_opens_no_shard_and_imports_no_tensorflow(synthetic_dir, tmp_path):
    # Beam's process mode, so that the process below is only the launcher;
    # an audit hook sees every file it opens.
    script = textwrap.dedent(f"""
        import sys
        opened = []
        sys.addaudithook(lambda event, args: opened.append(str(args[0]))
                         if event == "open" and args and isinstance(args[0], str) else None)
        from preprocess import pipeline
        manifest = pipeline.run(["--source", {str(synthetic_dir)!r}, "--output_dir",
                                 {str(tmp_path / "out")!r}, "--num_shards", "2",
                                 "--image_size", "32",
                                 "--direct_running_mode=multi_processing"])
        assert manifest["splits"]["all"]["num_videos"] == 48
        print("OPENED", [p for p in opened if p.endswith((".tfrecord", ".frag"))])
        print("TENSORFLOW", "tensorflow" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines()
                 if line.startswith(("OPENED", "TENSORFLOW")))
    assert lines == {"OPENED": "[]", "TENSORFLOW": "False"}
    assert sorted(os.listdir(tmp_path / "out")) == [".lock", "all", "failures.jsonl",
                                                    "manifest.json"]


def _ids(fragments):
    return [i for f in fragments for i in f.video_ids]


def _shard_order(plans):
    return [[record for record in _read(shards.write_shard(plan)["path"])] for plan in plans]


def test_the_order_is_the_seeds_whatever_the_bundles(tmp_path):
    payloads = [f"v{i:03d}".encode() for i in range(60)]
    one_bundle = _fragments(tmp_path / "a", [[("train", p) for p in payloads]])
    # Other bundles, in another order, as another run of the runner may make them.
    shuffled = list(reversed(payloads))
    many = _fragments(tmp_path / "b", [[("train", p) for p in shuffled[i:i + 7]]
                                       for i in range(0, 60, 7)])
    first = _shard_order(shards.plan_shards(one_bundle, str(tmp_path / "a"), {"train": 3}))
    second = _shard_order(shards.plan_shards(many, str(tmp_path / "b"), {"train": 3}))
    assert first == second
    assert sorted(sum(first, [])) == payloads
    assert sum(first, []) != payloads  # shuffled, not in id order
    other_seed = _shard_order(shards.plan_shards(many, str(tmp_path / "b"), {"train": 3},
                                                 seed=1))
    assert sum(other_seed, []) != sum(first, []) and sorted(sum(other_seed, [])) == payloads


def _ucf101_like_fragments(num_classes, per_class, bundle=50):
    """Fragments as the Beam job makes them from UCF101's sorted ids: runs of one class."""
    ids = [f"v_Class{c:03d}_g{g:02d}_c{k}" for c in range(num_classes)
           for g, k in ((i // 5 + 1, i % 5) for i in range(per_class))]
    return [shards.Fragment("train", f"frag{i}", (1000,) * len(ids[i:i + bundle]),
                            (("c", 1, 8, 8),) * len(ids[i:i + bundle]), tuple(ids[i:i + bundle]))
            for i in range(0, len(ids), bundle)]


def _expected_distinct(counts, draws):
    """Mean distinct classes among `draws` records drawn without replacement."""
    total = sum(counts)
    return sum(1 - math.comb(total - n, draws) / math.comb(total, draws) for n in counts)


def test_every_shard_is_a_fair_sample_at_ucf101_size():
    # UCF101's size: 101 classes, ~95 train videos each, 74 shards.
    fragments = _ucf101_like_fragments(101, 95)
    plans = shards.plan_shards(fragments, "out", {"train": 74})
    path_ids = {f.path: f.video_ids for f in fragments}
    uniform = _expected_distinct([95] * 101, plans[0].records)
    for plan in plans:
        classes = {path_ids[path][start // 1000 + i][:13]
                   for path, start, end in plan.ranges for i in range((end - start) // 1000)}
        # A shard cut in id order held 6-7 classes; a uniform one ~0.8 of 101.
        assert len(classes) >= 0.85 * uniform, (plan.path, len(classes), uniform)


def _tiny_records(folder, num_classes, per_class, num_shards):
    """Writes a records folder the job's way (fragments, plan, shard copies), with
    one 16x16 frame a video, from fragments in class order as UCF101's ids give."""
    jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    writer = shards.FragmentWriter(str(folder))
    fragments = []
    for c in range(num_classes):
        for i in range(per_class):
            video_id = f"v_Class{c:03d}_g{i // 4 + 1:02d}_c{i % 4 + 1:02d}"
            example = schema.encode_video_example(
                [jpeg], label=c, label_text=f"Class{c:03d}", video_id=video_id,
                group=i // 4 + 1, clip=i % 4 + 1, height=16, width=16, fps=25.0)
            writer.write("train", video_id, example, (f"Class{c:03d}", 1, 16, 16))
        if c % 3 == 2:  # a bundle ends every few classes
            fragments += writer.close()
    fragments += writer.close()
    entries = [shards.write_shard(plan) for plan in
               shards.plan_shards(fragments, str(folder), {"train": num_shards})]
    manifest_lib.write_manifest(str(folder), {
        "schema_version": schema.SCHEMA_VERSION,
        "classes": [f"Class{c:03d}" for c in range(num_classes)],
        "splits": {"train": {
            "num_videos": num_classes * per_class,
            "shards": [os.path.relpath(e["path"], folder) for e in entries],
            "shard_records": [e["records"] for e in entries],
            "shard_bytes": [e["bytes"] for e in entries]}},
        "geometry": {"frame_sizes": [[16, 16]]}})


def test_training_batches_are_fair_samples_of_a_set_larger_than_any_buffer(tmp_path):
    # 4,040 videos in 40 shards, 16x the reader's 256-video shuffle buffer.
    num_classes, per_class = 101, 40
    _tiny_records(tmp_path, num_classes, per_class, num_shards=40)
    spec = reader.ClipSpec(num_frames=1, image_size=8, training=True, crop_scale=None)
    dataset = reader.make_dataset(str(tmp_path), "train", spec, batch_size=32, seed=0)
    distinct = [len(set(labels.numpy().tolist())) for _, labels in dataset.take(120)]
    uniform = _expected_distinct([per_class] * num_classes, 32)
    # Shards cut in id order gave ~0.6 of a uniform draw here.
    assert np.mean(distinct) >= 0.95 * uniform, (np.mean(distinct), uniform)
    assert collections.Counter(distinct).most_common(1)[0][0] >= 24
