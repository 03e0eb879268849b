"""What the job decodes: the driver's choice of videos, each with its split and label.

Only names are listed here, so the videos are a few bytes each.
"""

import dataclasses

import pytest

from preprocess import options, tasks
from preprocess.errors import PreprocessError
from preprocess.sources import open_source

UCF101_NAMES = [f"v_{cls}_g{g:02d}_c01.avi" for cls in ("Shrink", "Grow") for g in (1, 2, 3)]


def _touch(root, *names):
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(b"video")
    return root


def _plan(source, *argv):
    args = options.pipeline_options(["--source", str(source), "--output_dir", "unused",
                                     *argv]).view_as(options.PreprocessOptions)
    return tasks.plan_tasks(args, options.check_args(args))


def test_every_video_gets_a_split_and_its_class_index(tmp_path):
    source = _touch(tmp_path / "src", *UCF101_NAMES, "README.txt")
    listing, classes, chosen, spec = _plan(source)
    assert (listing.layout, classes, spec) == ("ucf101", ["Grow", "Shrink"], {"kind": "all"})
    assert sorted((t.ref.video_id, t.split, t.label) for t in chosen) == sorted(
        (name[:-4], "all", 0 if "Grow" in name else 1) for name in UCF101_NAMES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        chosen[0].label = 5


def test_a_subset_request_picks_whole_groups(tmp_path):
    source = _touch(tmp_path / "src", *UCF101_NAMES)
    _, classes, chosen, spec = _plan(source, "--per_class", "train=2,test=1",
                                     "--classes", "Shrink")
    assert classes == ["Shrink"] and spec["kind"] == "subset"
    splits = {t.split for t in chosen}
    assert splits == {"train", "test"} and len(chosen) == 3
    groups = {split: {t.ref.group for t in chosen if t.split == split} for split in splits}
    assert not groups["train"] & groups["test"]
    assert {t.label for t in chosen} == {0}


def test_class_names_fix_the_labels_and_must_name_every_class(tmp_path):
    source = _touch(tmp_path / "src", *UCF101_NAMES)
    names = tmp_path / "names.txt"
    names.write_text("1 Shrink\n2 Grow\n3 Jump\n")
    opened = open_source(str(source))
    try:
        assert tasks.read_class_names(str(names), opened) == ["Shrink", "Grow", "Jump"]
    finally:
        opened.close()
    _, classes, chosen, _ = _plan(source, "--class_names", str(names))
    assert classes == ["Shrink", "Grow", "Jump"]
    assert {t.ref.class_name: t.label for t in chosen} == {"Shrink": 0, "Grow": 1}
    names.write_text("Grow\n")
    with pytest.raises(PreprocessError, match="class Shrink of the source is not in "
                                              "--class_names"):
        _plan(source, "--class_names", str(names))


def test_a_source_without_videos_of_its_layout_is_refused(tmp_path):
    source = _touch(tmp_path / "src", "holiday.avi", "notes.txt")
    with pytest.raises(PreprocessError, match="no videos of layout ucf101 found in .*; "
                                              "UCF101 names look like"):
        _plan(source, "--layout", "ucf101")
