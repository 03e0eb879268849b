"""Which video goes to which split, and which label id each class gets.

Three ways, all decided on the driver before any Beam work so that a bad
request fails at once: UCF101's official split lists (`classInd.txt`,
`trainlist0K.txt`, `testlist0K.txt`), a seeded group-aware subset like the
tutorial's (`--num_classes 10 --per_class train=30,val=10,test=10`), or the
`train/`, `val/`, `test/` folders of a source already laid out that way.
Without any of these every video goes to one split named `all`.
"""

import collections
import os
import random

from preprocess.errors import UserError
from preprocess.sources import SourceError, open_source, parse_ucf101_name


class SplitError(UserError):
    """A split request that cannot be met; the message says what is available."""


def parse_per_class(text):
    """Parses `train=30,val=10,test=10` into an ordered `{split: count}`."""
    counts = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit() or int(value) <= 0:
            raise SplitError(f"bad --per_class item {item!r}; write it as "
                             "split=count, e.g. train=30,val=10,test=10")
        counts[name.strip()] = int(value)
    if not counts:
        raise SplitError("--per_class is empty; write it as train=30,val=10,test=10")
    return counts


def parse_class_index(text):
    """Parses `classInd.txt` (`1 ApplyEyeMakeup` per line) into class names by id."""
    classes = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise SplitError(f"classInd.txt line {number} is {line!r}; expected "
                             "'<id> <ClassName>'")
        classes[int(fields[0])] = fields[1]
    if not classes:
        raise SplitError("classInd.txt is empty")
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise SplitError("classInd.txt ids must run 1..N without gaps")
    return [classes[i] for i in sorted(classes)]


def parse_split_list(text, name="split list"):
    """Parses a `trainlist0K.txt`/`testlist0K.txt` into video ids.

    Lines look like `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1` (train) or
    without the label (test).
    """
    video_ids = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        path = line.split()[0]
        stem, ext = os.path.splitext(path.replace("\\", "/").split("/")[-1])
        if not stem.startswith("v_") or not ext:
            raise SplitError(f"{name} line {number} is {line!r}; expected "
                             "'<Class>/v_<Class>_gNN_cNN.avi [label]'")
        video_ids.append(stem)
    return video_ids


def load_official_splits(split_lists, split_index):
    """Reads UCF101's official lists from a folder or zip.

    Returns:
        `(classes, {video_id: split})` with splits `train` and `test`.
    """
    if split_index not in (1, 2, 3):
        raise SplitError(f"--split_index must be 1, 2 or 3, not {split_index}")
    try:
        source = open_source(split_lists)
        files = {os.path.basename(path): path for path in source.list_files()}
    except SourceError as error:
        raise SplitError(f"cannot read --split_lists: {error}") from None
    wanted = ["classInd.txt", f"trainlist0{split_index}.txt", f"testlist0{split_index}.txt"]
    missing = [name for name in wanted if name not in files]
    if missing:
        raise SplitError(f"--split_lists {split_lists} lacks {', '.join(missing)}; "
                         "point it at UCF101's ucfTrainTestlist folder or zip")
    classes = parse_class_index(source.read_text(files[wanted[0]]))
    assignment = {}
    for split, name in (("train", wanted[1]), ("test", wanted[2])):
        for video_id in parse_split_list(source.read_text(files[name]), name):
            if assignment.get(video_id, split) != split:
                raise SplitError(f"{video_id} is in both the train and the test list "
                                 f"of split {split_index}")
            assignment[video_id] = split
    source.close()
    return classes, assignment


def assign_splits(videos, *, split_lists=None, split_index=1, per_class=None,
                  num_classes=None, classes=None, seed=0, source_name="the source"):
    """Chooses the split of every video, by the first of these that applies:
    UCF101's official lists (`split_lists`), a seeded group-aware subset
    (`per_class`), the source's own split folders, or one split `all`.

    Returns:
        `(classes in label order, {video_id: split}, spec for the manifest)`.
    """
    if split_lists and per_class:
        raise SplitError("pass either --split_lists or --per_class, not both")
    if split_lists:
        official, assignment = load_official_splits(split_lists, split_index)
        if classes or num_classes:
            official = select_classes(official, num_classes=num_classes, classes=classes)
        chosen = {v.video_id: assignment[v.video_id] for v in videos
                  if v.video_id in assignment and v.class_name in official}
        listed = sum(1 for video_id in assignment
                     if (parse_ucf101_name(video_id) or ("",))[0] in official)
        if not chosen:
            raise SplitError(f"none of the {listed} videos in the split lists is in "
                             f"{source_name}; check that --source and --split_lists "
                             "belong together")
        return official, chosen, {"kind": "official", "split_lists": split_lists,
                                  "split_index": split_index,
                                  "missing_from_source": listed - len(chosen)}
    if per_class:
        counts = parse_per_class(per_class)
        drawn, split_of = draw_subset(videos, counts, num_classes=num_classes,
                                      classes=classes, seed=seed)
        return drawn, split_of, {"kind": "subset", "per_class": counts, "seed": seed,
                                 "num_classes": len(drawn)}
    kept = select_classes(sorted({v.class_name for v in videos}),
                          num_classes=num_classes, classes=classes)
    in_folders = any(v.folder_split for v in videos)
    split_of = {v.video_id: (v.folder_split if in_folders else "all") for v in videos
                if v.class_name in kept and (v.folder_split or not in_folders)}
    return kept, split_of, {"kind": "folders" if in_folders else "all"}


def draw_subset(videos, per_class, *, num_classes=None, classes=None, seed=0):
    """Draws a group-aware subset: whole groups of a class go to one split.

    Args:
        videos: `VideoRef`s to draw from.
        per_class: `{split: count}` of clips wanted per class and split.
        num_classes: take the first N classes in sorted order. Defaults to all.
        classes: explicit class names; overrides `num_classes`.
        seed: the draw's seed; the same seed gives the same subset.

    Returns:
        `(classes, {video_id: split})`.
    """
    by_class = collections.defaultdict(lambda: collections.defaultdict(list))
    for ref in videos:
        by_class[ref.class_name][ref.group].append(ref)
    chosen = select_classes(sorted(by_class), num_classes=num_classes, classes=classes)

    problems, assignment = [], {}
    for class_name in chosen:
        groups = by_class[class_name]
        # One seed for every class: the same group numbers shuffle the same
        # way, so a group number lands in one split across classes, as in
        # UCF101's official splits. A scene shared by the classes of a group
        # then cannot tell classes apart in training and mislead at test.
        order = sorted(groups)
        random.Random(seed).shuffle(order)
        pending = collections.deque(order)
        for split, count in per_class.items():
            taken = []
            while len(taken) < count and pending:
                clips = sorted(groups[pending.popleft()])
                # The rest of a partly used group is dropped, never given to
                # another split: that is what keeps a group in one split.
                taken.extend(clips[:count - len(taken)])
            if len(taken) < count:
                total = sum(len(c) for c in groups.values())
                problems.append(
                    f"{class_name} has {total} clips in {len(groups)} groups, "
                    f"too few for {_describe(per_class)} drawn by whole groups")
                break
            for ref in taken:
                assignment[ref.video_id] = split
    if problems:
        raise SplitError("; ".join(problems) + "; lower --per_class or --num_classes")
    return chosen, assignment


def select_classes(available, *, num_classes=None, classes=None):
    """Chooses class names from `available`, checking names and counts."""
    if classes:
        unknown = [c for c in classes if c not in available]
        if unknown:
            raise SplitError(f"unknown class {', '.join(unknown)}; the source has "
                             f"{_preview(available)}")
        return list(classes)
    if num_classes is not None:
        if num_classes > len(available):
            raise SplitError(f"--num_classes {num_classes} but the source has only "
                             f"{len(available)} classes")
        return list(available[:num_classes])
    return list(available)


def _describe(per_class):
    return ",".join(f"{k}={v}" for k, v in per_class.items())


def _preview(names, limit=8):
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
