"""Which video goes to which split, and which label id each class gets.

All decided on the driver before any Beam work, so that a bad request fails
at once. A video's split comes from a seeded group-aware subset like the
tutorial's (`--num_classes 10 --per_class train=30,val=10,test=10`), seeded
group-aware fractions (`--split_fractions train=0.7,val=0.1,test=0.2`), or
the layout's own splits: split folders, an annotation's `split` column, or
official lists, which `preprocess.official_lists` reads for the layouts. Without
any of these every video goes to one split named `all`. Labels follow sorted
class names unless official lists or `--class_names` fix their order. This
module opens no file: it only assigns.
"""

import collections
import random

from preprocess.errors import SplitError



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


def parse_fractions(text):
    """Parses `train=0.7,val=0.1,test=0.2` into an ordered `{split: fraction}` summing to 1."""
    fractions = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not sep or not name.strip() or not 0 < fraction <= 1:
            raise SplitError(f"bad --split_fractions item {item!r}; write it as "
                             "split=fraction, e.g. train=0.7,val=0.1,test=0.2")
        fractions[name.strip()] = fraction
    if not fractions:
        raise SplitError("--split_fractions is empty; write it as train=0.7,val=0.1,test=0.2")
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise SplitError(f"--split_fractions sum to {total:g}, not 1; e.g. "
                         "train=0.7,val=0.1,test=0.2")
    return fractions


def assign_splits(videos, *, classes=None, per_class=None, split_fractions=None,
                  num_classes=None, chosen=None, seed=0, layout_spec=None):
    """Chooses the classes, and the split of every video, by the first of these that
    applies: a seeded group-aware subset (`per_class`), seeded group-aware
    fractions (`split_fractions`), the layout's own splits (`ref.split`), or one
    split `all`.

    Args:
        videos: `VideoRef`s as a layout listed them.
        classes: every class name in label order, when the layout or
            `--class_names` fixes it; else the sorted names of `videos`.
        per_class: `{split: count}`, as `parse_per_class` returns it.
        split_fractions: `{split: fraction}`, as `parse_fractions` returns it.
        chosen, num_classes: which of those classes to keep.
        layout_spec: the manifest's description of the layout's own splits.

    Returns:
        `(classes in label order, {video_id: split}, spec for the manifest)`.
    """
    available = classes or sorted({v.class_name for v in videos})
    kept = select_classes(available, num_classes=num_classes, classes=chosen)
    if per_class:
        present = {v.class_name for v in videos}
        split_of = draw_groups(videos, [c for c in kept if c in present], per_class,
                               seed=seed)
        return kept, split_of, {"kind": "subset", "per_class": per_class, "seed": seed,
                                 "num_classes": len(kept)}
    wanted = set(kept)
    videos = [v for v in videos if v.class_name in wanted]
    if split_fractions:
        return kept, split_by_fractions(videos, split_fractions, seed=seed), {
            "kind": "fractions", "fractions": split_fractions, "seed": seed}
    if layout_spec:
        return kept, {v.video_id: v.split for v in videos if v.split}, layout_spec
    return kept, {v.video_id: "all" for v in videos}, {"kind": "all"}


def split_by_fractions(videos, fractions, *, seed=0):
    """Splits each class by fractions, moving whole groups; exact when groups are unknown.

    Every class gets `round(n * fraction)` videos per split (largest
    remainders). Groups, in a seeded order, go one at a time to the split
    whose classes lack the most videos, so a group never spans two splits.

    Returns:
        `{video_id: split}`.
    """
    by_class = collections.Counter(v.class_name for v in videos)
    deficit = {cls: dict(zip(fractions, _apportion(n, list(fractions.values()))))
               for cls, n in by_class.items()}
    units = collections.defaultdict(list)
    for ref in videos:
        units[ref.group_key].append(ref)
    order = sorted(units)
    random.Random(seed).shuffle(order)
    assignment = {}
    for key in order:
        members = collections.Counter(ref.class_name for ref in units[key])
        best = max(fractions, key=lambda split: sum(
            count * deficit[cls][split] for cls, count in members.items()))
        for cls, count in members.items():
            deficit[cls][best] -= count
        for ref in units[key]:
            assignment[ref.video_id] = best
    empty = [split for split in fractions if split not in set(assignment.values())]
    if empty:
        raise SplitError(f"--split_fractions leaves {empty[0]} without a video; the "
                         f"source has {len(videos)} videos, raise its fraction")
    return assignment


def _apportion(total, fractions):
    """Integer parts of `total` in proportion to `fractions`, by largest remainder."""
    exact = [total * f for f in fractions]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


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
    chosen = select_classes(sorted({v.class_name for v in videos}),
                            num_classes=num_classes, classes=classes)
    return chosen, draw_groups(videos, chosen, per_class, seed=seed)


def draw_groups(videos, classes, per_class, *, seed=0):
    """The draw of `draw_subset` over classes already chosen; returns `{video_id: split}`."""
    by_class = collections.defaultdict(lambda: collections.defaultdict(list))
    for ref in videos:
        by_class[ref.class_name][ref.group_key].append(ref)
    problems, assignment = [], {}
    for class_name in classes:
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
    return assignment


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
