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


def _ungrouped(per_class, classes=("a", "b")):
    return [VideoRef(f"{c}/{i}.mp4", f"{c}{i}", c) for c in classes for i in range(per_class)]


def test_split_fractions_give_exact_counts_and_are_seeded():
    videos = _ungrouped(10)
    fractions = {"train": 0.7, "val": 0.1, "test": 0.2}
    split_of = splits.split_by_fractions(videos, fractions, seed=1)
    for cls in ("a", "b"):
        counts = [sum(1 for v in videos if v.class_name == cls and split_of[v.video_id] == s)
                  for s in fractions]
        assert counts == [7, 1, 2]
    assert splits.split_by_fractions(list(reversed(videos)), fractions, seed=1) == split_of
    assert splits.split_by_fractions(videos, fractions, seed=2) != split_of
    # 11 videos: 7.7, 1.1, 2.2 round by largest remainder to 8, 1, 2.
    odd = splits.split_by_fractions(_ungrouped(11, ("a",)), fractions)
    assert [list(odd.values()).count(s) for s in fractions] == [8, 1, 2]


def test_split_fractions_keep_groups_whole():
    videos = [VideoRef(f"{c}{g}{k}", f"{c}{g}{k}", c, group=g)
              for c in "ab" for g in range(10) for k in range(3)]
    split_of = splits.split_by_fractions(videos, {"train": 0.6, "test": 0.4}, seed=0)
    by_group = {}
    for ref in videos:
        by_group.setdefault(ref.group, set()).add(split_of[ref.video_id])
    assert all(len(s) == 1 for s in by_group.values()), by_group
    assert sum(split == "test" for split in split_of.values()) == 24


def test_bad_split_fractions():
    for text, fragment in (("train=0.7,test=0.2", "sum to 0.9, not 1"),
                           ("train=0.7,test=x", "bad --split_fractions item 'test=x'"),
                           ("train=1.5,test=-0.5", "bad --split_fractions item"),
                           ("", "empty")):
        with pytest.raises(splits.SplitError, match=fragment):
            splits.parse_fractions(text)
    with pytest.raises(splits.SplitError, match="leaves val without a video"):
        splits.split_by_fractions(_ungrouped(2, ("a",)), {"train": 0.9, "val": 0.1})


def test_class_names_fix_the_label_order():
    videos = _ungrouped(2, ("ant", "Zebra crossing"))
    classes, _, _ = splits.assign_splits(videos)
    assert classes == ["Zebra crossing", "ant"]
    classes, _, _ = splits.assign_splits(videos, classes=["ant", "bee", "Zebra crossing"])
    assert classes == ["ant", "bee", "Zebra crossing"]
