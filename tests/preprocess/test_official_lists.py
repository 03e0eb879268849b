"""Official split lists: UCF101's classInd.txt and train/test lists, from a folder or a zip."""

import zipfile

import pytest

from conftest import REPO
from preprocess import official_lists
from preprocess.errors import SplitError

FIXTURE_LISTS = REPO / "tests" / "fixtures" / "ucfTrainTestlist"


def _official(path, index):
    with official_lists.SplitLists(str(path)) as lists:
        return official_lists.load_official_splits(lists, index)


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
    with pytest.raises(SplitError, match="lacks classInd.txt"):
        _official(tmp_path, 1)
    (tmp_path / "classInd.txt").write_text("1 A\nthree B\n")
    (tmp_path / "trainlist01.txt").write_text("A/v_A_g01_c01.avi 1\n")
    (tmp_path / "testlist01.txt").write_text("A/v_A_g01_c01.avi\n")
    with pytest.raises(SplitError, match="line 2"):
        _official(tmp_path, 1)
    (tmp_path / "classInd.txt").write_text("1 A\n")
    with pytest.raises(SplitError, match="both the train and the test"):
        _official(tmp_path, 1)
    with pytest.raises(SplitError, match="cannot read --split_lists"):
        _official(tmp_path / "nowhere", 1)


def test_class_names_files_are_read_in_their_order():
    assert official_lists.parse_class_names("Zebra crossing\nant\n") == ["Zebra crossing", "ant"]
    assert official_lists.parse_class_names("1 Jump Rope\n2 Café\n") == ["Jump Rope", "Café"]
    with pytest.raises(SplitError, match="lists ant twice"):
        official_lists.parse_class_names("ant\nbee\nant\n")
