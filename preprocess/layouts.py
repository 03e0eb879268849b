"""How a source's files become labelled videos: the five layouts `--layout` names.

- `ucf101`: UCF101's names, `v_<Class>_gNN_cNN.avi`, anywhere in the source;
  `--split_lists` takes UCF101's official `trainlist0K`/`testlist0K` files.
- `class_folders`: `<root>/<class>/<video>` or `<root>/<split>/<class>/<video>`
  (split folders `train`, `val`, `test`); deeper folders belong to their class.
- `annotations`: a CSV (`--annotations`) with columns `path,label` and
  optional `split`, `group`; or Kinetics' own CSV
  (`label,youtube_id,time_start,time_end,split`).
- `hmdb51`: `<root>/<class>/<video>.avi` with HMDB51's
  `<class>_test_split<N>.txt` files in `--split_lists`.
- `auto` picks one of these from what it finds, or says which to pass.

A layout only lists: it yields `VideoRef`s carrying the class, the group
when known, and the layout's own split when it has one. Which videos go to
which split is then decided by `preprocess.splits`. The root of a zip whose
members all sit in one top folder is that folder.
"""

import collections
import contextlib
import csv
import dataclasses
import io
import os
import posixpath
import re

from preprocess import official_lists, splits
from preprocess.errors import UserError
from preprocess.sources import VideoRef

LAYOUTS = ("auto", "ucf101", "class_folders", "annotations", "hmdb51")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
SPLIT_FOLDERS = ("train", "val", "test")
# UCF101's naming: v_<Class>_g<group>_c<clip>.avi
_UCF_NAME = re.compile(r"^v_(?P<cls>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)$")
_KINETICS_COLUMNS = {"label", "youtube_id", "time_start", "time_end"}


class LayoutError(UserError):
    """A source that does not match its layout; the message says what to pass."""


@dataclasses.dataclass
class Listing:
    """What a layout found in a source.

    Attributes:
        layout: the layout used (never `auto`).
        videos: the labelled videos; `ref.split` is the layout's own split.
        ignored: files that are not videos of this layout.
        classes: class names in the order the layout fixes (official lists),
            or None for sorted names.
        split_spec: how the layout's own splits were made, for the manifest,
            or None when it has none.
        unmatched_lists: `{class: split file}` of split files that name no
            video of the source; an error for every class that is kept.
    """
    layout: str
    videos: list
    ignored: list
    classes: list = None
    split_spec: dict = None
    unmatched_lists: dict = dataclasses.field(default_factory=dict)


def parse_ucf101_name(video_id):
    """`(class, group, clip)` of a UCF101 name like `v_Shotput_g05_c02`, or None."""
    match = _UCF_NAME.match(video_id)
    return (match["cls"], int(match["group"]), int(match["clip"])) if match else None


def split_path(path):
    """A path's parts, with either kind of slash."""
    return [part for part in re.split(r"[\\/]", path) if part]


def normalize(path):
    """A relative path written any way (`./a//b`, `a\\b`) in one spelling."""
    return posixpath.normpath("/".join(split_path(path)))


def is_video(path):
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def stem(path):
    return os.path.splitext(split_path(path)[-1])[0]


def ucf101_ref(location):
    """A `VideoRef` for a path or member name, or None if it is not a UCF101 video."""
    parts = split_path(location)
    if not parts or not is_video(location):
        return None
    name = parse_ucf101_name(stem(location))
    if name is None:
        return None
    class_name, group, clip = name
    split = next((p for p in parts[:-1] if p in SPLIT_FOLDERS), None)
    return VideoRef(location=location, video_id=stem(location), class_name=class_name,
                    group=group, clip=clip, split=split)


def relative_files(source):
    """`[(location, relative path)]` of a source's files below its root.

    A zip whose files all sit in one top folder (as most archives are made)
    has that folder as its root.
    """
    files = [(location, "/".join(split_path(source.relative(location))))
             for location in source.list_files()]
    tops = {rel.split("/")[0] for _, rel in files if "/" in rel}
    if source.is_archive and len(tops) == 1 and all("/" in rel for _, rel in files):
        top = tops.pop() + "/"
        files = [(location, rel[len(top):]) for location, rel in files]
    return files


# ---------------------------------------------------------------------------
# The layouts
# ---------------------------------------------------------------------------

def list_ucf101(files, lists=None, split_index=1):
    """`lists` is the `official_lists.SplitLists` of UCF101's official lists, if any."""
    videos, ignored = [], []
    for location, _ in files:
        ref = ucf101_ref(location)
        (ignored.append(location) if ref is None else videos.append(ref))
    if lists is None:
        return Listing("ucf101", videos, ignored,
                       split_spec={"kind": "folders"} if any(v.split for v in videos)
                       else None)
    classes, assignment = official_lists.load_official_splits(lists, split_index)
    listed = [v for v in videos if v.video_id in assignment]
    if not listed:
        raise LayoutError(f"none of the {len(assignment)} videos in the split lists is in "
                          "the source; check that --source and --split_lists belong together")
    known = set(classes)
    unknown = sorted({v.class_name for v in listed} - known)
    if unknown:
        raise LayoutError(f"class {unknown[0]} is in the split lists but not in their "
                          "classInd.txt; the lists are inconsistent")
    return Listing(
        "ucf101", [dataclasses.replace(v, split=assignment[v.video_id]) for v in listed],
        ignored + [v.location for v in videos if v.video_id not in assignment],
        classes=classes,
        split_spec={"kind": "official", "split_lists": lists.spec,
                    "split_index": split_index,
                    "missing_from_source": len(assignment) - len(listed)})


def class_folder_shape(files):
    """`"split"`, `"class"` or None: how the videos of `files` sit below the root."""
    parts = [rel.split("/") for location, rel in files if is_video(rel)]
    if not parts:
        return None
    if all(len(p) >= 3 and p[0] in SPLIT_FOLDERS for p in parts):
        return "split"
    if all(len(p) >= 2 for p in parts):
        return "class"
    return None


def list_class_folders(files):
    shape = class_folder_shape(files)
    in_splits = shape == "split"
    videos, ignored = [], []
    for location, rel in files:
        parts = rel.split("/")
        if not is_video(rel) or len(parts) < (3 if in_splits else 2):
            ignored.append(location)
            continue
        split, class_name = (parts[0], parts[1]) if in_splits else (None, parts[0])
        videos.append(VideoRef(location=location, video_id=stem(rel),
                               class_name=class_name, split=split))
    return Listing("class_folders", videos, ignored,
                   split_spec={"kind": "folders"} if in_splits else None)


def read_text_file(spec, source, flag="--annotations", files=None):
    """The text of a file a flag names: a local or `gs://` path, else a member of the source.

    `files` is the source's `relative_files`, when the caller has listed it already.
    """
    from apache_beam.io.filesystems import FileSystems
    try:
        if FileSystems.exists(spec):
            with FileSystems.open(spec) as handle:
                return handle.read().decode("utf-8-sig"), spec
    except (OSError, ValueError):
        pass
    members = {}
    for location, rel in files if files is not None else relative_files(source):
        members[rel] = members[location] = location
    if spec in members:
        return source.read_text(members[spec]).lstrip("\ufeff"), spec
    raise LayoutError(f"{flag} {spec} is neither a file nor a member of the source; "
                      "pass the file's path")


def parse_annotations(text, name="--annotations"):
    """The rows of an annotation CSV as dicts, and its kind: `generic` or `kinetics`.

    Raises:
        LayoutError: on a header without the needed columns, an empty label,
            an unknown split name or a repeated path.
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [column.strip().lower() for column in reader.fieldnames or []]
    reader.fieldnames = header
    if {"path", "label"} <= set(header):
        kind = "generic"
    elif _KINETICS_COLUMNS <= set(header):
        kind = "kinetics"
    else:
        raise LayoutError(f"{name} has columns {','.join(header) or '(none)'}; it needs "
                          "a header with path,label (and optional split,group) or "
                          "Kinetics' label,youtube_id,time_start,time_end,split")
    rows, seen = [], {}
    for number, row in enumerate(reader, 2):
        row = {key: (value or "").strip() for key, value in row.items() if key}
        if not any(row.values()):
            continue
        if not row["label"]:
            raise LayoutError(f"{name} line {number} has an empty label; every row "
                              "needs one")
        if "split" in row and row["split"] not in SPLIT_FOLDERS:
            raise LayoutError(f"{name} line {number} has split {row['split']!r}; use "
                              f"one of {', '.join(SPLIT_FOLDERS)}")
        if kind == "kinetics":
            try:
                row["path"] = (f"{row['youtube_id']}_{int(float(row['time_start'])):06d}"
                               f"_{int(float(row['time_end'])):06d}")
            except ValueError:
                raise LayoutError(f"{name} line {number} has times {row['time_start']!r}, "
                                  f"{row['time_end']!r}; expected seconds") from None
            row["group"] = row["youtube_id"]
        key = normalize(row["path"])
        if key in seen:
            raise LayoutError(f"{name} lists {row['path']} twice (lines {seen[key]} and "
                              f"{number}); each video may appear once")
        seen[key] = number
        row["line"] = number
        rows.append(row)
    if not rows:
        raise LayoutError(f"{name} has a header but no rows")
    return rows, kind


def group_numbers(names):
    """Integer group ids for group names: the number itself when every name is one."""
    names = sorted(set(names))
    if all(name.isdigit() for name in names):
        return {name: int(name) for name in names}
    return {name: index for index, name in enumerate(names)}


def list_annotations(source, files, annotations):
    text, name = read_text_file(annotations, source, files=files)
    rows, kind = parse_annotations(text, f"--annotations {name}")
    by_rel = {rel: location for location, rel in files}
    if kind == "kinetics":
        # Downloaders save <youtube_id>_<start>_<end>.<ext> at the root or
        # below a folder named after the label.
        by_stem = collections.defaultdict(list)
        for location, rel in files:
            if is_video(rel):
                by_stem[stem(rel)].append((rel, location))
    groups = group_numbers(row["group"] for row in rows if row.get("group"))
    videos = []
    for row in rows:
        if kind == "kinetics":
            folders = {"", row["label"], row["label"].replace(" ", "_")}
            found = [location for rel, location in by_stem.get(row["path"], ())
                     if rel.rpartition("/")[0] in folders]
            location = found[0] if found else row["path"]
        else:
            # Only listed files can be found: a path leading out of the
            # source matches none, and is recorded as missing.
            location = by_rel.get(normalize(row["path"]))
        problem = None
        if location is None:
            location = row["path"]
            problem = (f"FileNotFoundError: listed on line {row['line']} of "
                       f"{annotations} but not in the source")
        elif kind == "kinetics" and not found:
            problem = (f"FileNotFoundError: no {row['path']}.<ext> at the root of the "
                       f"source or below {row['label']}/ (line {row['line']} of "
                       f"{annotations})")
        videos.append(VideoRef(
            location=location, video_id=stem(row["path"]), class_name=row["label"],
            group=groups[row["group"]] if row.get("group") else -1,
            split=row.get("split") or None, problem=problem))
    listed = {v.location for v in videos}
    ignored = [location for location, _ in files if location not in listed]
    spec = {"kind": "annotations", "annotations": annotations, "format": kind}
    return Listing("annotations", videos, ignored,
                   split_spec=spec if any(v.split for v in videos) else None)


def is_hmdb51_lists(lists):
    """Whether a `official_lists.SplitLists` holds HMDB51's `<class>_test_split<N>.txt` files."""
    try:
        names = lists.files()
    except splits.SplitError:
        return False
    return any(official_lists.hmdb51_list_class(name, index)
               for name in names for index in (1, 2, 3))


def list_hmdb51(files, lists, split_index):
    found = official_lists.load_hmdb51_splits(lists, split_index)
    videos, ignored, matched = [], [], collections.Counter()
    for location, rel in files:
        parts = rel.split("/")
        tag = found.get(parts[0], {}).get(parts[-1]) if len(parts) >= 2 else None
        if not is_video(rel) or tag is None:
            ignored.append(location)
            continue
        matched[parts[0]] += 1
        if tag == "unused":
            continue
        videos.append(VideoRef(location=location, video_id=stem(rel),
                               class_name=parts[0], split=tag))
    if not matched:
        raise LayoutError(f"none of the videos in the HMDB51 split lists of {lists.spec} "
                          "is in the source; check that --source and --split_lists "
                          "belong together")
    unmatched = {cls: official_lists.hmdb51_list_name(cls, split_index) for cls in found
                 if not matched[cls]}
    return Listing("hmdb51", videos, ignored, classes=sorted(found),
                   split_spec={"kind": "official", "split_lists": lists.spec,
                               "split_index": split_index},
                   unmatched_lists=unmatched)


# ---------------------------------------------------------------------------
# Choosing and listing
# ---------------------------------------------------------------------------

def choose_layout(files, *, annotations=None, lists=None, name="the source"):
    """What `auto` picks, or a `LayoutError` that says what it found."""
    if annotations:
        return "annotations"
    if lists is not None and is_hmdb51_lists(lists):
        return "hmdb51"
    videos = [rel for _, rel in files if is_video(rel)]
    if not videos:
        raise LayoutError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) found in {name}; "
                          "point --source at the folder, zip or URL that holds them")
    if all(ucf101_ref(rel) for rel in videos):
        return "ucf101"
    if class_folder_shape(files):
        return "class_folders"
    top = [rel for rel in videos if "/" not in rel]
    raise LayoutError(
        f"cannot tell the layout: of {len(videos)} videos, {len(top)} sit at the top "
        f"of {name} (e.g. {top[0] if top else videos[0]}) and not every name is "
        "UCF101's; put each video in a folder named after its class and pass "
        "--layout class_folders, or pass --layout annotations --annotations FILE")


def list_source(source, *, layout="auto", annotations=None, split_lists=None,
                split_index=1, name="the source"):
    """Lists a source under a layout; every video id comes out unique."""
    files = relative_files(source)
    with (official_lists.SplitLists(split_lists) if split_lists
          else contextlib.nullcontext()) as lists:
        if layout == "auto":
            layout = choose_layout(files, annotations=annotations, lists=lists, name=name)
        if layout == "ucf101":
            listing = list_ucf101(files, lists, split_index)
        elif layout == "class_folders":
            listing = list_class_folders(files)
        elif layout == "annotations":
            listing = list_annotations(source, files, annotations)
        else:
            listing = list_hmdb51(files, lists, split_index)
    listing.videos = unique_ids(listing.videos, source)
    return listing


def unique_ids(videos, source):
    """File names as ids; the path below the root where file names repeat."""
    counts = collections.Counter(v.video_id for v in videos)
    if max(counts.values(), default=1) == 1:
        return videos
    return [dataclasses.replace(v, video_id=os.path.splitext(
                "/".join(split_path(source.relative(v.location))))[0])
            if counts[v.video_id] > 1 else v for v in videos]
