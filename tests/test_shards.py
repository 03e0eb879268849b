"""Shards cut from fragments: TFRecord framing, balanced cuts, byte-range copies."""

import os
import subprocess
import sys
import textwrap

import tensorflow as tf

from conftest import REPO
from preprocess import shards


def _fragments(tmp_path, layout):
    """Writes fragments through `FragmentWriter`: `layout` is a list of bundles,
    each a list of `(split, payload)`."""
    fragments = []
    for bundle in layout:
        writer = shards.FragmentWriter(str(tmp_path))
        for split, payload in bundle:
            writer.write(split, payload.decode(), payload, ("c", 1, 2, 3))
        fragments += writer.close()
    return fragments


def _read(path):
    return [record.numpy() for record in tf.data.TFRecordDataset(str(path))]


def test_framing_is_tfrecord():
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"framing-{os.getpid()}.tfrecord")
    payloads = [b"", b"x", os.urandom(100_000)]
    with open(path, "wb") as out:
        for payload in payloads:
            out.write(shards.tfrecord(payload))
    try:
        # TensorFlow checks both CRCs of every record.
        assert _read(path) == payloads
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
    assert max(shard_bytes) - min(shard_bytes) <= max(len(p) for p in expected) + 16


def test_shard_count_is_capped_and_sized_by_bytes(tmp_path, monkeypatch):
    fragments = _fragments(tmp_path, [[("all", b"v" * 1000 + bytes([i])) for i in range(5)]])
    plans = shards.plan_shards(fragments, str(tmp_path), {"all": 9})
    assert len(plans) == 5 and all(p.records == 1 for p in plans)  # never an empty shard
    # Cuts follow bytes, not record counts: a big record fills a shard alone.
    skewed = _fragments(tmp_path, [[("all", b"big" * 100)] + [("all", bytes([i])) for i in
                                                                range(5)]])
    assert [p.records for p in shards.plan_shards(skewed, str(tmp_path), {"all": 2})] == [1, 5]
    monkeypatch.setattr(shards, "TARGET_SHARD_BYTES", 2100)
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
    assert sorted(os.listdir(tmp_path / "out")) == ["all", "failures.jsonl", "manifest.json"]
