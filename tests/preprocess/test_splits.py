"""Split assignment: official lists, the group-aware subset draw, and their error messages."""

import zipfile

import pytest

from conftest import REPO
from preprocess import official_lists, splits
from preprocess.sources import VideoRef

FIXTURE_LISTS = REPO / "tests" / "fixtures" / "ucfTrainTestlist"


def _videos(groups_per_class, clips=2, classes=("A", "B", "C")):
    return [VideoRef(f"v_{c}_g{g:02d}_c{k:02d}.avi", f"v_{c}_g{g:02d}_c{k:02d}", c, g, k)
            for c in classes for g in range(1, groups_per_class + 1)
            for k in range(1, clips + 1)]


def _official(path, index):
    with official_lists.SplitLists(str(path)) as lists:
        return official_lists.load_official_splits(lists, index)


def test_parse_per_class():
    assert splits.parse_per_class("train=30,val=10,test=10") == {
        "train": 30, "val": 10, "test": 10}
    for bad in ("train", "train=x", "train=0", ""):
        with pytest.raises(splits.SplitError, match="per_class"):
            splits.parse_per_class(bad)


@pytest.mark.parametrize("index,test_group", [(1, 1), (2, 2), (3, 3)])
def test_official_lists_from_folder(index, test_group):
    classes, assignment = _official(FIXTURE_LISTS, index)
    assert classes[0] == "Grow" and len(classes) == 8
    assert sum(split == "test" for split in assignment.values()) == 16
    assert sum(split == "train" for split in assignment.values()) == 32
    assert assignment[f"v_Grow_g{test_group:02d}_c01"] == "test"


def test_official_lists_from_zip(tmp_path):
    archive = tmp_path / "ucfTrainTestlist.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in FIXTURE_LISTS.iterdir():
            zf.write(path, f"ucfTrainTestlist/{path.name}")
    classes, assignment = _official(archive, 1)
    assert len(classes) == 8 and len(assignment) == 48


def test_bad_official_lists(tmp_path):
    with pytest.raises(splits.SplitError, match="lacks classInd.txt"):
        _official(tmp_path, 1)
    (tmp_path / "classInd.txt").write_text("1 A\nthree B\n")
    (tmp_path / "trainlist01.txt").write_text("A/v_A_g01_c01.avi 1\n")
    (tmp_path / "testlist01.txt").write_text("A/v_A_g01_c01.avi\n")
    with pytest.raises(splits.SplitError, match="line 2"):
        _official(tmp_path, 1)
    (tmp_path / "classInd.txt").write_text("1 A\n")
    with pytest.raises(splits.SplitError, match="both the train and the test"):
        _official(tmp_path, 1)
    with pytest.raises(splits.SplitError, match="cannot read --split_lists"):
        _official(tmp_path / "nowhere", 1)


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
