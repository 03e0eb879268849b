"""The videos a prediction command names: `find_videos` for `scripts/predict.py`.

Importing this is light (no TensorFlow), so a command line is checked
before TensorFlow loads.
"""

import os

from preprocess import layouts
from preprocess.errors import UsageError


def find_videos(inputs, list_file=None):
    """The video files that files, folders (searched recursively) and a list file name.

    A file named on the command line is taken whatever its extension; a
    folder contributes its files with a video extension
    (`preprocess.layouts.VIDEO_EXTENSIONS`), in sorted order; a list file
    holds one path a line (blank lines and `#` comments skipped), relative
    paths being relative to the current folder. Listed paths are not checked
    here: one that is missing fails as its video, and the rest go on.

    Raises:
        UsageError: an input that does not exist, or nothing to predict.
    """
    videos = []
    for path in inputs:
        if os.path.isdir(path):
            found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(path)
                           for name in names if layouts.is_video(name))
            if not found:
                raise UsageError(f"no video files ({', '.join(layouts.VIDEO_EXTENSIONS)}) "
                                 f"under {path}")
            videos.extend(found)
        elif os.path.isfile(path):
            videos.append(path)
        else:
            raise UsageError(f"no such file or folder: {path}")
    if list_file is not None:
        if not os.path.isfile(list_file):
            raise UsageError(f"no such list file: {list_file}")
        with open(list_file) as handle:
            listed = [line.strip() for line in handle]
        videos.extend(line for line in listed if line and not line.startswith("#"))
    if not videos:
        raise UsageError("no videos to predict; name files, folders or a --list file")
    return videos
