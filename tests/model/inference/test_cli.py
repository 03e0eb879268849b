"""`find_videos`: the files, folders and list file a prediction command names."""

import re

import pytest

from conftest import in_fresh_python
from model.inference.cli import find_videos
from preprocess.errors import UsageError


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return str(path)


def test_folders_give_their_videos_sorted_and_recursively(tmp_path):
    names = ["b.avi", "a.MP4", "deeper/c.mkv", "notes.txt", "deeper/d.avi.part"]
    for name in names:
        _touch(tmp_path / "videos" / name)
    named = _touch(tmp_path / "clip.weird")  # a file named on the command line is taken as is
    assert find_videos([named, str(tmp_path / "videos")]) == [
        named, str(tmp_path / "videos" / "a.MP4"), str(tmp_path / "videos" / "b.avi"),
        str(tmp_path / "videos" / "deeper" / "c.mkv")]


def test_a_list_file_adds_its_lines_unchecked(tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text("# my videos\n\n  one.avi  \nmissing/two.mp4\n")
    first = _touch(tmp_path / "zero.avi")
    assert find_videos([first], str(listing)) == [first, "one.avi", "missing/two.mp4"]


@pytest.mark.parametrize("inputs, list_name, fragment", [
    (["nowhere.avi"], None, "no such file or folder: "),
    (["empty"], None, "no video files (.avi, .mp4"),
    ([], "absent.txt", "no such list file: "),
    ([], "comments.txt", "no videos to predict; name files, folders or a --list file"),
    ([], None, "no videos to predict"),
])
def test_nothing_to_predict_is_a_usage_error(tmp_path, inputs, list_name, fragment):
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "empty" / "readme.txt")
    (tmp_path / "comments.txt").write_text("# nothing yet\n")
    with pytest.raises(UsageError, match=re.escape(fragment)):
        find_videos([str(tmp_path / name) for name in inputs],
                    list_name and str(tmp_path / list_name))


def test_importing_it_loads_no_tensorflow():
    result, loaded = in_fresh_python("import model.inference.cli\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert loaded == []
