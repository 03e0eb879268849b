"""The lists datasets publish beside their videos: which video is in which split, class order.

UCF101's `classInd.txt`, `trainlist0N.txt` and `testlist0N.txt`; HMDB51's
`<class>_test_splitN.txt`; a `--class_names` file. Layouts read them here
(`preprocess.layouts`); `preprocess.splits` only assigns the splits they name.
"""

import os
import re

from preprocess.errors import SplitError
from preprocess.sources import SourceError, open_source

_HMDB_TAGS = {"0": "unused", "1": "train", "2": "test"}


class SplitLists:
    """The folder or zip `--split_lists` names, opened once for everything that reads it.

    Opened on first use, so a layout that never reads it cannot fail on it;
    use it as a context manager, which closes it.
    """

    def __init__(self, spec):
        self.spec = spec
        self._source = None
        self._files = None

    def files(self):
        """`{file name: location}` of the files it holds."""
        if self._files is None:
            try:
                self._source = open_source(self.spec)
                self._files = {os.path.basename(path.replace("\\", "/")): path
                               for path in self._source.list_files()}
            except SourceError as error:
                raise SplitError(f"cannot read --split_lists: {error}") from None
        return self._files

    def read_text(self, name):
        return self._source.read_text(self.files()[name])

    def close(self):
        if self._source is not None:
            self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def hmdb51_list_name(class_name, split_index):
    """HMDB51's list file of a class and split: `<class>_test_split<N>.txt`."""
    return f"{class_name}_test_split{split_index}.txt"


def hmdb51_list_class(name, split_index):
    """The class whose HMDB51 list file of split `split_index` is `name`, or None."""
    suffix = hmdb51_list_name("", split_index)
    return name[:-len(suffix)] if name.endswith(suffix) else None


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


def load_official_splits(lists, split_index):
    """Reads UCF101's official lists from a `SplitLists`.

    Returns:
        `(classes, {video_id: split})` with splits `train` and `test`.
    """
    files = lists.files()
    wanted = ["classInd.txt", f"trainlist0{split_index}.txt", f"testlist0{split_index}.txt"]
    missing = [name for name in wanted if name not in files]
    if missing:
        raise SplitError(f"--split_lists {lists.spec} lacks {', '.join(missing)}; "
                         "point it at UCF101's ucfTrainTestlist folder or zip")
    classes = parse_class_index(lists.read_text(wanted[0]))
    assignment = {}
    for split, name in (("train", wanted[1]), ("test", wanted[2])):
        for video_id in parse_split_list(lists.read_text(name), name):
            if assignment.get(video_id, split) != split:
                raise SplitError(f"{video_id} is in both the train and the test list "
                                 f"of split {split_index}")
            assignment[video_id] = split
    return classes, assignment


def parse_class_names(text, name="--class_names"):
    """Class names in label order: one per line, or UCF101's `classInd.txt` (`1 Name`)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    numbered = [re.match(r"^(\d+)\s+(\S.*)$", line) for line in lines]
    if lines and all(numbered) and [int(m[1]) for m in numbered] == list(
            range(1, len(lines) + 1)):
        names = [m[2] for m in numbered]
    else:
        names = lines
    if not names:
        raise SplitError(f"{name} is empty; write one class name per line")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SplitError(f"{name} lists {repeated[0]} twice; each class once")
    return names


def load_hmdb51_splits(lists, split_index):
    """Reads HMDB51's `<class>_test_split<N>.txt` files from a `SplitLists`.

    Lines are `<video>.avi <tag>`: 1 train, 2 test, 0 unused.

    Returns:
        `{class: {file name: "train" | "test" | "unused"}}`.
    """
    found = {}
    for name in lists.files():
        class_name = hmdb51_list_class(name, split_index)
        if class_name is None:
            continue
        tags = {}
        for number, line in enumerate(lists.read_text(name).splitlines(), 1):
            if not line.strip():
                continue
            fields = line.rsplit(None, 1)
            if len(fields) != 2 or fields[1] not in _HMDB_TAGS:
                raise SplitError(f"{name} line {number} is {line!r}; expected "
                                 "'<video>.avi <0|1|2>'")
            tags[fields[0].strip()] = _HMDB_TAGS[fields[1]]
        found[class_name] = tags
    if not found:
        raise SplitError(f"--split_lists {lists.spec} holds no "
                         f"*{hmdb51_list_name('', split_index)} file; point it at "
                         "HMDB51's testTrainMulti_7030_splits folder or zip")
    return found
