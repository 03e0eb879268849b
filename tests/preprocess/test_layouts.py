"""Layouts: how each one lists a source, what `auto` picks, and their bad input.

These tests only list sources, so most of their videos are a few bytes; the
Beam runs on real videos are in `test_pipeline.py`.
"""

import zipfile

import pytest

from preprocess import layouts, official_lists, splits
from preprocess.sources import open_source


def _touch(root, *paths):
    for path in paths:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"video")
    return root


def _listing(root, **kwargs):
    source = open_source(str(root))
    try:
        return layouts.list_source(source, **kwargs)
    finally:
        source.close()


def _summary(listing):
    return sorted((v.class_name, v.video_id, v.split, v.group) for v in listing.videos)


def test_ucf101_names_are_parsed():
    ref = layouts.ucf101_ref("UCF101/v_ApplyEyeMakeup_g08_c03.avi")
    assert (ref.video_id, ref.class_name, ref.group, ref.clip, ref.split) == (
        "v_ApplyEyeMakeup_g08_c03", "ApplyEyeMakeup", 8, 3, None)
    nested = layouts.ucf101_ref("subset/test/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    assert nested.split == "test"
    assert layouts.ucf101_ref("UCF101/readme.txt") is None
    assert layouts.ucf101_ref("UCF101/holiday.avi") is None


def test_class_folders_take_names_as_they_come(tmp_path):
    root = _touch(tmp_path / "src", "Jump Rope/a!b&c.mp4", "Jump Rope/day 2/(take 1).avi",
                  "Café/x.MOV", "Café/notes.txt", "loose.avi")
    listing = _listing(root, layout="class_folders")
    assert listing.layout == "class_folders"
    assert _summary(listing) == [("Café", "x", None, -1),
                                 ("Jump Rope", "(take 1)", None, -1),
                                 ("Jump Rope", "a!b&c", None, -1)]
    assert sorted(p.rsplit("/", 1)[-1] for p in listing.ignored) == ["loose.avi", "notes.txt"]
    assert listing.split_spec is None


def test_class_folders_below_split_folders_give_the_splits(tmp_path):
    root = _touch(tmp_path / "src", "train/cat/1.mp4", "train/dog/2.mp4", "val/cat/3.mp4",
                  "test/dog/4.mp4")
    listing = _listing(root)
    assert listing.layout == "class_folders"
    assert _summary(listing) == [("cat", "1", "train", -1), ("cat", "3", "val", -1),
                                 ("dog", "2", "train", -1), ("dog", "4", "test", -1)]
    classes, split_of, spec = splits.assign_splits(listing.videos,
                                                   layout_spec=listing.split_spec)
    assert classes == ["cat", "dog"] and spec == {"kind": "folders"}
    assert split_of == {"1": "train", "2": "train", "3": "val", "4": "test"}


def test_repeated_file_names_get_their_path_as_id(tmp_path):
    root = _touch(tmp_path / "src", "cat/001.mp4", "dog/001.mp4", "dog/002.mp4")
    ids = sorted(v.video_id for v in _listing(root).videos)
    assert ids == ["002", "cat/001", "dog/001"]


def test_a_zip_with_one_top_folder_has_it_as_root(tmp_path):
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("mine/cat/1.mp4", "mine/dog/2.mp4", "mine/README.txt"):
            zf.writestr(name, b"video")
    listing = _listing(archive)
    assert listing.layout == "class_folders"
    assert _summary(listing) == [("cat", "1", None, -1), ("dog", "2", None, -1)]


def test_auto_says_what_it_found_and_what_to_pass(tmp_path):
    root = _touch(tmp_path / "flat", "clip1.mp4", "cat/clip2.mp4")
    with pytest.raises(layouts.LayoutError) as error:
        _listing(root, name="flat")
    message = str(error.value)
    assert "1 sit at the top of flat (e.g. clip1.mp4)" in message
    assert "--layout class_folders" in message and "--layout annotations" in message
    with pytest.raises(layouts.LayoutError, match="no videos"):
        _listing(_touch(tmp_path / "empty", "readme.txt"))
    ucf = _touch(tmp_path / "ucf", "Grow/v_Grow_g01_c01.avi", "v_Shrink_g02_c01.avi")
    assert _listing(ucf).layout == "ucf101"
    # One name that is not UCF101's makes it a class-folder set.
    _touch(ucf, "Shrink/other.avi")
    with pytest.raises(layouts.LayoutError, match="cannot tell the layout"):
        _listing(ucf)
    (ucf / "v_Shrink_g02_c01.avi").unlink()
    assert _listing(ucf).layout == "class_folders"


CSV = """path,label,split,group
cat/a.mp4,Big cat,train,actor1
cat/b.mp4,Big cat,test,actor2
dog/c.mp4,dög,train,actor1
dog/missing.mp4,dög,test,
"""


def test_annotations_list_labels_splits_groups_and_missing_files(tmp_path):
    root = _touch(tmp_path / "src", "cat/a.mp4", "cat/b.mp4", "dog/c.mp4", "dog/extra.mp4")
    (tmp_path / "labels.csv").write_text(CSV, encoding="utf-8")
    listing = _listing(root, annotations=str(tmp_path / "labels.csv"))
    assert listing.layout == "annotations"
    assert _summary(listing) == [("Big cat", "a", "train", 0), ("Big cat", "b", "test", 1),
                                 ("dög", "c", "train", 0), ("dög", "missing", "test", -1)]
    problems = {v.video_id: v.problem for v in listing.videos if v.problem}
    assert list(problems) == ["missing"] and "line 5" in problems["missing"]
    assert [p.rsplit("/", 1)[-1] for p in listing.ignored] == ["extra.mp4"]
    assert listing.split_spec["kind"] == "annotations"


def test_annotations_can_be_a_member_of_the_source_zip(tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("set/labels.csv", "path,label\ncat/a.mp4,cat\ndog/b.mp4,dog\n")
        zf.writestr("set/cat/a.mp4", b"v")
        zf.writestr("set/dog/b.mp4", b"v")
    listing = _listing(archive, layout="annotations", annotations="labels.csv")
    assert _summary(listing) == [("cat", "a", None, -1), ("dog", "b", None, -1)]
    assert not any(v.problem for v in listing.videos)


@pytest.mark.parametrize("text,fragment", [
    ("path,label\na.mp4,\n", "line 2 has an empty label"),
    ("path,label,split\na.mp4,cat,training\n", "split 'training'; use one of train, val"),
    ("path,label\na.mp4,cat\n./a.mp4,dog\n", "lists ./a.mp4 twice (lines 2 and 3)"),
    ("file,class\na.mp4,cat\n", "has columns file,class"),
    ("path,label\n", "no rows"),
    ("label,youtube_id,time_start,time_end,split\ncat,abc,x,10,train\n", "expected seconds"),
])
def test_bad_annotations_are_refused(text, fragment):
    with pytest.raises(layouts.LayoutError) as error:
        layouts.parse_annotations(text)
    assert fragment in str(error.value)


def test_kinetics_csv_finds_downloader_names(tmp_path):
    # Below its label's folder, at the root, and below another label's folder.
    root = _touch(tmp_path / "k400", "abseiling/AAA_000010_000020.mp4",
                  "BBB_000001_000011.mp4", "other/CCC_000000_000010.mp4")
    (tmp_path / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,AAA,10,20,train,0\n"
        "air drumming,BBB,1,11,train,0\n"
        "abseiling,CCC,0,10,val,0\n")
    listing = _listing(root, annotations=str(tmp_path / "train.csv"))
    by_id = {v.video_id: v for v in listing.videos}
    assert sorted(by_id) == ["AAA_000010_000020", "BBB_000001_000011", "CCC_000000_000010"]
    assert by_id["BBB_000001_000011"].class_name == "air drumming"
    assert by_id["AAA_000010_000020"].problem is None
    # CCC sits below a folder of another label: not where the CSV says.
    assert "no CCC_000000_000010.<ext>" in by_id["CCC_000000_000010"].problem


def _hmdb_lists(folder, index=1, **files):
    folder.mkdir(parents=True, exist_ok=True)
    for cls, lines in files.items():
        (folder / f"{cls}_test_split{index}.txt").write_text(lines)
    return folder


def test_hmdb51_split_files(tmp_path):
    lists = _hmdb_lists(tmp_path / "splits",
                        brush_hair="a!&.avi 1 \nb.avi 2 \nc.avi 0 \n",
                        cartwheel="d(1).avi 1\ne.avi 2\n")
    _hmdb_lists(tmp_path / "splits", 2, brush_hair="a!&.avi 2\n", cartwheel="d(1).avi 1\n")
    with official_lists.SplitLists(str(lists)) as opened:
        parsed = official_lists.load_hmdb51_splits(opened, 1)
    assert parsed == {"brush_hair": {"a!&.avi": "train", "b.avi": "test", "c.avi": "unused"},
                      "cartwheel": {"d(1).avi": "train", "e.avi": "test"}}
    root = _touch(tmp_path / "hmdb51", "brush_hair/a!&.avi", "brush_hair/b.avi",
                  "brush_hair/c.avi", "cartwheel/d(1).avi", "cartwheel/e.avi",
                  "cartwheel/unlisted.avi")
    listing = _listing(root, split_lists=str(lists))
    assert listing.layout == "hmdb51" and listing.classes == ["brush_hair", "cartwheel"]
    assert _summary(listing) == [("brush_hair", "a!&", "train", -1),
                                 ("brush_hair", "b", "test", -1),
                                 ("cartwheel", "d(1)", "train", -1),
                                 ("cartwheel", "e", "test", -1)]
    assert _summary(_listing(root, split_lists=str(lists), split_index=2)) == [
        ("brush_hair", "a!&", "test", -1), ("cartwheel", "d(1)", "train", -1)]


def test_bad_hmdb51_split_files(tmp_path):
    lists = _hmdb_lists(tmp_path / "bad", brush_hair="a.avi 3\n")
    with official_lists.SplitLists(str(lists)) as opened:
        with pytest.raises(splits.SplitError, match="brush_hair_test_split1.txt line 1"):
            official_lists.load_hmdb51_splits(opened, 1)
        with pytest.raises(splits.SplitError, match="no \\*_test_split2.txt file"):
            official_lists.load_hmdb51_splits(opened, 2)
    root = _touch(tmp_path / "hmdb51", "brush_hair/a.avi")
    lists = _hmdb_lists(tmp_path / "other", brush_hair="zzz.avi 1\n")
    with pytest.raises(layouts.LayoutError, match="none of the videos in the HMDB51"):
        _listing(root, split_lists=str(lists))


def test_split_lists_are_opened_once_and_always_closed(tmp_path, monkeypatch):
    folder = _hmdb_lists(tmp_path / "splits", brush_hair="a.avi 1\nb.avi 2\n")
    archive = tmp_path / "splits.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(folder / "brush_hair_test_split1.txt", "splits/brush_hair_test_split1.txt")
    opened = []

    def spy(spec):
        opened.append(real_open(spec))
        return opened[-1]

    real_open = official_lists.open_source
    monkeypatch.setattr(official_lists, "open_source", spy)
    root = _touch(tmp_path / "hmdb51", "brush_hair/a.avi", "brush_hair/b.avi")
    listing = _listing(root, split_lists=str(archive))  # auto reads the lists twice
    assert listing.layout == "hmdb51" and len(listing.videos) == 2
    assert len(opened) == 1 and opened[0]._zip.fp is None
    opened.clear()
    with pytest.raises(splits.SplitError, match="lacks classInd.txt"):
        _listing(root, layout="ucf101", split_lists=str(archive))
    assert len(opened) == 1 and opened[0]._zip.fp is None
