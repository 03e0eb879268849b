"""Split assignment: the group-aware subset draw and its error messages."""

import pytest

from preprocess import splits
from preprocess.sources import VideoRef


def _videos(groups_per_class, clips=2, classes=("A", "B", "C")):
    return [VideoRef(f"v_{c}_g{g:02d}_c{k:02d}.avi", f"v_{c}_g{g:02d}_c{k:02d}", c, g, k)
            for c in classes for g in range(1, groups_per_class + 1)
            for k in range(1, clips + 1)]


def test_parse_per_class():
    assert splits.parse_per_class("train=30,val=10,test=10") == {
        "train": 30, "val": 10, "test": 10}
    for bad in ("train", "train=x", "train=0", ""):
        with pytest.raises(splits.SplitError, match="per_class"):
            splits.parse_per_class(bad)


def test_subset_keeps_each_group_in_one_split():
    videos = _videos(groups_per_class=7, clips=3)
    classes, assignment = splits.draw_subset(videos, {"train": 6, "val": 3, "test": 3})
    assert classes == ["A", "B", "C"]
    split_of_group = {}
    for ref in videos:
        if ref.video_id in assignment:
            key = (ref.class_name, ref.group)
            split_of_group.setdefault(key, set()).add(assignment[ref.video_id])
    assert all(len(s) == 1 for s in split_of_group.values()), split_of_group
    for cls in classes:
        counts = [sum(1 for r in videos if r.class_name == cls
                      and assignment.get(r.video_id) == s) for s in ("train", "val", "test")]
        assert counts == [6, 3, 3]


def test_subset_puts_a_group_number_in_one_split_across_classes():
    videos = _videos(groups_per_class=7, clips=3)
    _, assignment = splits.draw_subset(videos, {"train": 6, "val": 3, "test": 3}, seed=3)
    split_of_number = {}
    for ref in videos:
        if ref.video_id in assignment:
            split_of_number.setdefault(ref.group, set()).add(assignment[ref.video_id])
    assert all(len(s) == 1 for s in split_of_number.values()), split_of_number


def test_subset_is_seeded_and_deterministic():
    videos = _videos(groups_per_class=6)
    first = splits.draw_subset(videos, {"train": 4, "test": 2}, seed=1)
    again = splits.draw_subset(list(reversed(videos)), {"train": 4, "test": 2}, seed=1)
    other = splits.draw_subset(videos, {"train": 4, "test": 2}, seed=2)
    assert first == again
    assert first[1] != other[1]


def test_subset_class_choice_and_errors():
    videos = _videos(groups_per_class=2)
    assert splits.draw_subset(videos, {"train": 2}, num_classes=2)[0] == ["A", "B"]
    assert splits.draw_subset(videos, {"train": 2}, classes=["C"])[0] == ["C"]
    with pytest.raises(splits.SplitError, match="unknown class Zebra"):
        splits.draw_subset(videos, {"train": 2}, classes=["Zebra"])
    with pytest.raises(splits.SplitError, match="only 3 classes"):
        splits.draw_subset(videos, {"train": 2}, num_classes=5)
    with pytest.raises(splits.SplitError, match="A has 4 clips in 2 groups"):
        splits.draw_subset(videos, {"train": 2, "val": 2, "test": 2})
