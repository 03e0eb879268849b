"""What the job decodes: each chosen video with its split and label.

The driver lists the source under its layout and assigns splits and labels
here, before any Beam work, so a bad request fails at once.
"""

import dataclasses

from preprocess import layouts, official_lists, splits
from preprocess.errors import PreprocessError
from preprocess.sources import open_source


class VideoUnavailable(Exception):
    """A listed video that the layout already found missing."""


@dataclasses.dataclass(frozen=True)
class VideoTask:
    """A video selected for a split, with its label."""
    ref: object
    split: str
    label: int


def plan_tasks(args, request):
    """Lists the source under its layout and assigns each chosen video a split and label.

    `request` is the `SplitRequest` that `check_args` parsed.

    Returns:
        `(listing, classes, tasks, split_spec)`.
    """
    source = open_source(args.source)
    try:
        listing = layouts.list_source(source, layout=args.layout,
                                      annotations=args.annotations,
                                      split_lists=args.split_lists,
                                      split_index=args.split_index, name=args.source)
        class_names = read_class_names(args.class_names, source) if args.class_names else None
    finally:
        source.close()
    if not listing.videos:
        raise PreprocessError(
            f"no videos of layout {listing.layout} found in {args.source}; "
            + ("UCF101 names look like v_<Class>_gNN_cNN.avi; " if listing.layout == "ucf101"
               else "") + "check --source and --layout")
    if class_names:
        strangers = sorted({v.class_name for v in listing.videos} - set(class_names))
        if strangers:
            raise PreprocessError(f"class {strangers[0]} of the source is not in "
                                  f"--class_names {args.class_names}; add it there")
    classes, split_of, spec = splits.assign_splits(
        listing.videos, classes=class_names or listing.classes,
        per_class=request.per_class, split_fractions=request.split_fractions,
        num_classes=args.num_classes, chosen=request.classes, seed=args.seed,
        layout_spec=listing.split_spec)
    unmatched = [listing.unmatched_lists[c] for c in classes if c in listing.unmatched_lists]
    if unmatched:
        raise PreprocessError(
            f"--split_lists file {unmatched[0]} names no video of {args.source}; check "
            "that --source and --split_lists belong together, or leave the class out "
            "with --classes")
    label_of = {name: index for index, name in enumerate(classes)}
    tasks = [VideoTask(v, split_of[v.video_id], label_of[v.class_name])
             for v in listing.videos if v.video_id in split_of]
    if not tasks:
        raise PreprocessError(f"no video of {args.source} falls in a split; check "
                              "--classes and the layout's split folders or column")
    return listing, classes, tasks, spec


def read_class_names(path, source):
    """The `--class_names` file, from a local or `gs://` path or the source zip."""
    text, _ = layouts.read_text_file(path, source, "--class_names")
    return official_lists.parse_class_names(text, f"--class_names {path}")
