"""Shared fixtures: tiny synthetic video sets, the real UCF101 clips, a Range-capable HTTP server."""

import argparse
import atexit
import functools
import http.server
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    """On a GPU machine, tests compare with references in true float32: no TF32 matmuls."""
    import tensorflow as tf
    tf.config.experimental.enable_tensor_float_32_execution(False)

REPO = pathlib.Path(__file__).resolve().parents[1]
# The fixtures shared with the project, beside the repository (CI has them).
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_UCF101 = SHARED_DATA / "ucf101"
# The real UCF101 clips: video id -> (class, group, clip, frames at 25 fps).
REAL_CLIPS = {
    "v_ApplyEyeMakeup_g01_c01": ("ApplyEyeMakeup", 1, 1, 164),
    "v_CricketBowling_g05_c02": ("CricketBowling", 5, 2, 111),
    "v_Shotput_g05_c02": ("Shotput", 5, 2, 130),
}
# A small synthetic set: 8 motion classes x 3 groups x 2 clips, 24 frames each.
SYNTHETIC = dict(groups=3, clips_per_group=2, num_frames=24)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A folder in UCF101's flat layout with 48 synthetic videos."""
    from preprocess import synthetic
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.write_dataset(root, **SYNTHETIC)
    return root / "UCF101"


# The two-class set of `two_class_records`: its synthetic videos, split and frames, as
# `python -m preprocess --per_class train=28,val=4,test=8 --image_size 54` would store them.
TWO_CLASS_VIDEOS = dict(classes=("Grow", "SlideRight"), groups=10, clips_per_group=4,
                        num_frames=30)
TWO_CLASS_PER_CLASS = "train=28,val=4,test=8"
TWO_CLASS_IMAGE_SIZE = 54


def two_class_records(root, *extra):
    """Records of two classes told apart by motion alone (Grow, SlideRight): 28 train,
    4 val and 8 test videos a class, frames 54 pixels high; their source videos in
    `root/videos/UCF101`.

    The videos are split by group as the Beam job splits them (`preprocess.splits`)
    and encoded frame for frame as it encodes them (`preprocess.video.encode_video`);
    the records are then written directly (`records.write_records`), so no Beam job
    runs. `extra` takes the job's `--num_shards N` (shards per split, default 1);
    Beam's own flags, such as `--direct_running_mode`, change nothing here and are
    accepted.
    """
    from records import write_records
    parser = argparse.ArgumentParser(prog="two_class_records")
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--direct_running_mode")
    args, unknown = parser.parse_known_args(extra)
    if unknown:
        raise ValueError(f"two_class_records takes --num_shards, not {' '.join(unknown)}")
    folder = root / "videos" / "UCF101"
    made = _two_class_videos()
    shutil.copytree(made["folder"], folder)
    return write_records(root / "records", made["videos"], classes=made["classes"],
                         num_shards=args.num_shards, source=folder, layout=made["layout"],
                         split_spec=made["split_spec"], image_size=TWO_CLASS_IMAGE_SIZE,
                         jpeg_quality=90, max_frames=1800,
                         options={"per_class": TWO_CLASS_PER_CLASS})


@functools.cache
def _two_class_videos():
    """The two-class videos, written once a session, and their split and encoded frames."""
    from preprocess import layouts, sources, splits, synthetic, video
    root = pathlib.Path(tempfile.mkdtemp(prefix="two_class_videos-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    synthetic.write_dataset(root, **TWO_CLASS_VIDEOS)
    source = sources.open_source(str(root / "UCF101"))
    try:
        listing = layouts.list_source(source)
        classes, split_of, split_spec = splits.assign_splits(
            listing.videos, classes=listing.classes, layout_spec=listing.split_spec,
            per_class=splits.parse_per_class(TWO_CLASS_PER_CLASS), seed=0)
        videos = []
        for ref in listing.videos:
            if ref.video_id not in split_of:
                continue
            with source.local_copy(ref) as path:
                jpegs, _, _, fps = video.encode_video(
                    path, resize="short_side", image_size=TWO_CLASS_IMAGE_SIZE,
                    jpeg_quality=90, max_frames=1800)
            videos.append(dict(video_id=ref.video_id, class_name=ref.class_name,
                               group=ref.group, clip=ref.clip, split=split_of[ref.video_id],
                               frames=jpegs, fps=fps))
    finally:
        source.close()
    return {"folder": root / "UCF101", "videos": videos, "classes": classes,
            "split_spec": split_spec, "layout": listing.layout}


@pytest.fixture(scope="session")
def real_ucf101_dir():
    """The real UCF101 clips in ../shared, read in place."""
    if not SHARED_UCF101.is_dir():
        pytest.skip(f"real UCF101 clips not found at {SHARED_UCF101}")
    return SHARED_UCF101


@pytest.fixture(scope="session")
def torchvision_recipe():
    """The shared numpy recipe of a torchvision `r2plus1d_18` state dict, as a module."""
    folder = SHARED_DATA / "torchvision_r2plus1d_18"
    if not folder.is_dir():
        pytest.skip(f"the torchvision recipe is not at {folder}")
    sys.path.insert(0, str(folder))
    try:
        import make_state_dict
    finally:
        sys.path.remove(str(folder))
    return make_state_dict


def run_cli(*args, timeout=600):
    """Runs `python -m <args>` from the repository; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def in_fresh_python(code, watch=("tensorflow", "keras"), timeout=120):
    """Runs `code` in a new interpreter from the repository.

    Returns its CompletedProcess and which of the modules in `watch` it had
    imported as it exited, however it exited (a script's `sys.exit` too).
    """
    with tempfile.TemporaryDirectory() as folder:
        record = os.path.join(folder, "loaded.txt")
        probe = ("import atexit, sys\n"
                 "atexit.register(lambda: open(%r, 'w').write(' '.join(\n"
                 "    name for name in %r if name in sys.modules)))\n" % (record, tuple(watch)))
        result = subprocess.run([sys.executable, "-c", probe + code], cwd=REPO,
                                capture_output=True, text=True, timeout=timeout)
        assert os.path.exists(record), result.stderr[-2000:]  # it ran to its exit
        with open(record) as handle:
            return result, handle.read().split()


def assert_one_line_error(result, *fragments):
    """A CLI misuse: non-zero exit, an `error:` line naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


class RangeServer:
    """A static file server on 127.0.0.1 that honours HTTP Range and logs what it sent.

    `fail_first` makes the first N GET requests answer 503, to exercise retries.
    """

    def __init__(self, root, fail_first=0):
        self.root = pathlib.Path(root)
        self.sent = []  # (path, start, end) of every byte range served
        self.fail_first = fail_first
        self.failures_served = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _target(self):
                path = server.root / self.path.lstrip("/")
                return path if path.is_file() else None

            def do_HEAD(self):
                path = self._target()
                if path is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self):
                if server.failures_served < server.fail_first:
                    server.failures_served += 1
                    self.send_error(503)
                    return
                path = self._target()
                if path is None:
                    self.send_error(404)
                    return
                size = path.stat().st_size
                match = re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
                start, end = 0, size - 1
                if match and match[1]:
                    start = int(match[1])
                    end = min(int(match[2]), size - 1) if match[2] else size - 1
                elif match and match[2]:
                    start = max(0, size - int(match[2]))
                with open(path, "rb") as handle:
                    handle.seek(start)
                    body = handle.read(end - start + 1)
                server.sent.append((self.path, start, end))
                self.send_response(206 if match else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def bytes_sent(self):
        return sum(end - start + 1 for _, start, end in self.sent)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def range_server(tmp_path):
    """Starts a `RangeServer` over a fresh folder; yields a factory for it."""
    servers = []

    def start(root=tmp_path, fail_first=0):
        server = RangeServer(root, fail_first=fail_first).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def copy_videos(src, dst, names=None):
    """Copies (or a subset of) a folder's videos into a new folder."""
    dst = pathlib.Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(pathlib.Path(src).iterdir()):
        if names is None or path.name in names:
            shutil.copy(path, dst / path.name)
    return dst


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny trained run on two motion classes, shared by the predict and evaluate tests."""
    from two_class_run import two_class_run
    root = tmp_path_factory.getbasetemp() / "two_class_run"
    root.mkdir(exist_ok=True)
    return two_class_run(root)


@pytest.fixture
def float32_policy():
    """Keras's float32 policy around a test that sets another one."""
    import keras
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def random_clips(batch, frames, size, seed=0):
    """Seeded uint8 clips `[batch, frames, size, size, 3]` for the networks' tests."""
    import numpy as np
    return np.random.default_rng(seed).integers(0, 256, (batch, frames, size, size, 3),
                                                dtype=np.uint8)
