"""Where videos come from: a folder, a local zip, or a remote zip read with remotezip.

A source lists the files it holds and hands each video to the decoder as a
local file; which files are videos of which class is a layout's business
(`preprocess.layouts`). Sources are opened lazily from their spec string, so a
Beam DoFn can carry just the string to its workers.
"""

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
import zipfile

from preprocess.errors import UserError

_COPY_CHUNK = 1 << 20


class SourceError(UserError):
    """A source that cannot be read; the message says what to fix."""


@dataclasses.dataclass(frozen=True, order=True)
class VideoRef:
    """One labelled video in a source, as a layout (`preprocess.layouts`) lists it.

    Args:
        location: the file's path (folder source) or member name (zip source).
        video_id: the file name without extension, e.g. `v_Shotput_g05_c02`;
            the path below the source's root where file names repeat.
        class_name: the class, as the layout names it (any UTF-8 text).
        group: clips of one group share actor and scene (UCF101's `gNN`, an
            annotation's `group`); -1 when unknown.
        clip: the clip number within its group (UCF101's `cNN`), or -1.
        split: the layout's own split (a split folder, an annotation's
            `split`, an official list), or None.
        problem: why the video cannot be read (a listed file that is
            missing); the job records it as failed without opening it.
    """
    location: str
    video_id: str
    class_name: str
    group: int = -1
    clip: int = -1
    split: str = None
    problem: str = None

    @property
    def group_key(self):
        """What keeps related videos in one split: the group, else the video itself.

        Sorts groups by number, so a seeded draw stays what it was when
        every group was a UCF101 number.
        """
        return (0, self.group, "") if self.group >= 0 else (1, 0, self.video_id)


def is_safe_member(name):
    """Whether a zip member name stays inside the folder it would extract to."""
    normalized = name.replace("\\", "/")
    return not (normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized)
                or ".." in normalized.split("/"))


def is_remote_url(spec):
    return spec.startswith(("http://", "https://"))


def retrying_session(retries=5, backoff=0.5):
    """A `requests.Session` that retries transient HTTP errors with backoff."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, connect=retries, read=retries,
                  backoff_factor=backoff,
                  status_forcelist=(408, 429, 500, 502, 503, 504),
                  allowed_methods=frozenset({"GET", "HEAD"}))
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class FolderSource:
    """Videos below a folder on any filesystem Beam knows (local, `gs://`, ...)."""
    is_archive = False

    def __init__(self, root):
        from apache_beam.io.filesystems import FileSystems
        self.root = root.rstrip("/")
        self._fs = FileSystems
        self._local = FileSystems.get_scheme(root) is None

    def list_files(self):
        if self._local:
            if not os.path.isdir(self.root):
                raise SourceError(f"source folder {self.root} does not exist; "
                                  "pass an existing folder, zip or URL to --source")
        matches = self._fs.match([self.root + "/**"])[0].metadata_list
        return sorted(m.path for m in matches)

    def relative(self, location):
        """The path of a listed file below the folder."""
        prefix = self.root + "/"
        return location[len(prefix):] if location.startswith(prefix) else location

    def read_text(self, location):
        with self._fs.open(location) as handle:
            return handle.read().decode("utf-8")

    @contextlib.contextmanager
    def local_copy(self, ref):
        if self._local:
            yield ref.location
            return
        with self._fs.open(ref.location) as handle:
            with _temp_copy(handle, ref.location) as path:
                yield path

    def close(self):
        pass


class ZipSource:
    """Videos inside a zip archive, local or remote (read with remotezip)."""
    is_archive = True

    def __init__(self, spec):
        self.spec = spec
        if is_remote_url(spec):
            import remotezip
            try:
                self._zip = remotezip.RemoteZip(spec, session=retrying_session())
            except Exception as error:  # remotezip raises several types.
                raise SourceError(f"cannot read the remote zip {spec}: {error}; "
                                  "check the URL and that the server supports "
                                  "HTTP Range requests") from None
        else:
            if not os.path.isfile(spec):
                raise SourceError(f"source zip {spec} does not exist; pass an "
                                  "existing folder, zip or URL to --source")
            try:
                self._zip = zipfile.ZipFile(spec)
            except zipfile.BadZipFile:
                raise SourceError(f"{spec} is not a valid zip archive; re-download "
                                  "it or pass the extracted folder") from None
        names = self._zip.namelist()
        self.unsafe_members = [n for n in names if not is_safe_member(n)]
        self._names = [n for n in names if is_safe_member(n) and not n.endswith("/")]

    def list_files(self):
        return sorted(self._names)

    def relative(self, location):
        return location

    def read_text(self, location):
        return self._zip.read(location).decode("utf-8")

    @contextlib.contextmanager
    def local_copy(self, ref):
        # The member name never becomes a path: we copy into a file we name.
        info = self._zip.getinfo(ref.location)
        with self._zip.open(info) as handle:
            with _temp_copy(handle, ref.location, total=info.file_size,
                            progress=is_remote_url(self.spec)) as path:
                yield path

    def close(self):
        self._zip.close()


@contextlib.contextmanager
def _temp_copy(handle, name, total=None, progress=False):
    """Copies a readable handle into a temporary file that is removed afterwards."""
    suffix = os.path.splitext(name)[1]
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="twoplusone-")
    try:
        with os.fdopen(fd, "wb") as out:
            if progress:
                from tqdm import tqdm
                with tqdm(total=total, unit="B", unit_scale=True, leave=False,
                          desc=os.path.basename(name), disable=None) as bar:
                    while chunk := handle.read(_COPY_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
            else:
                shutil.copyfileobj(handle, out, _COPY_CHUNK)
        yield path
    finally:
        os.remove(path)


def open_source(spec):
    """Opens a source spec: a folder, a `.zip` path, or an `http(s)://` zip URL."""
    if is_remote_url(spec) or spec.lower().endswith(".zip"):
        return ZipSource(spec)
    return FolderSource(spec)


