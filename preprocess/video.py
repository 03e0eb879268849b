"""Pure frame functions: decode a video file, resize its frames, encode them as JPEG.

The Beam job and `scripts/predict.py` both call these, so a video is turned
into frames the same way at preprocessing and at inference time.
"""

import cv2
import numpy as np

from preprocess.errors import UserError

RESIZE_POLICIES = ("short_side", "pad")
# UCF101's frames and rate: every one of its videos is 320x240 at 25 fps. Assumed
# where nothing better is known: a container that reports no rate, and shard
# sizes estimated before any video is decoded.
UCF101_FRAME_SIZE = (240, 320)
UCF101_FPS = 25.0


class VideoDecodeError(UserError):
    """A file that OpenCV cannot read as a video, or that holds no frames."""


def keep_frame(index, source_fps, target_fps):
    """Whether frame `index` survives resampling from `source_fps` to `target_fps`.

    Keeps a frame each time the target clock ticks, so 25 fps to 10 fps keeps
    frames 0, 3, 5, 8, 10, ... and never duplicates frames to raise the rate.
    """
    if not target_fps or target_fps >= source_fps:
        return True
    step = source_fps / target_fps
    return index // step != (index - 1) // step


class VideoFile:
    """An open video file that yields its frames one at a time.

    Streaming keeps memory flat: the Beam job resizes and JPEG-encodes each
    frame as it comes, so a long video never sits decoded in memory.

    Args:
        path: a local video file.

    Raises:
        VideoDecodeError: the file does not open as a video.
    """

    def __init__(self, path):
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            self._capture.release()
            raise VideoDecodeError("OpenCV cannot open it as a video")
        rate = self._capture.get(cv2.CAP_PROP_FPS)
        self.source_fps = (float(rate) if rate and np.isfinite(rate) and rate > 0
                           else UCF101_FPS)
        # The container's own frame count, when it has one, reveals truncated files.
        self.reported_frames = max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._capture.release()

    def stored_fps(self, fps=None):
        """The rate `frames(fps=fps)` yields at: `fps`, or the source's if lower."""
        return min(fps, self.source_fps) if fps else self.source_fps

    def frames(self, *, fps=None, max_frames=None, rgb=True):
        """Yields uint8 `[H, W, 3]` frames in order, RGB (or OpenCV's BGR).

        Args:
            fps: target frame rate; frames are skipped to reach it. Defaults to
                None, the source rate.
            max_frames: yield at most this many frames (after skipping), so
                that one huge video cannot exhaust memory. Defaults to None.
            rgb: False yields OpenCV's own BGR, for callers that hand frames
                back to OpenCV and so need no conversion at all.

        Raises:
            VideoDecodeError: the video holds no decodable frame, or ends well
                before the frame count its container reports (a truncated file).
        """
        index = kept = 0
        while max_frames is None or kept < max_frames:
            if keep_frame(index, self.source_fps, fps):
                ok, frame = self._capture.read()
                if not ok:
                    break
                kept += 1
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame
            # A dropped frame is still decoded (later frames depend on it) but
            # never converted to an image.
            elif not self._capture.grab():
                break
            index += 1
        if not kept:
            raise VideoDecodeError("the video decodes to zero frames")
        capped = max_frames is not None and kept >= max_frames
        if not capped and index < self.reported_frames - max(2, 0.05 * self.reported_frames):
            raise VideoDecodeError(f"only {index} of the {self.reported_frames} frames "
                                   "the file declares decode; it is truncated or corrupt")


def resized_shape(height, width, policy, image_size):
    """The `(height, width)` that `resize_frames` produces for a frame size."""
    if policy == "short_side":
        scale = image_size / min(height, width)
        return (max(image_size, round(height * scale)),
                max(image_size, round(width * scale)))
    if policy == "pad":
        return image_size, image_size
    raise ValueError(f"unknown resize policy {policy!r}; use one of "
                     f"{', '.join(RESIZE_POLICIES)}")


def resize_frame(frame, policy, image_size):
    """Resizes one uint8 `[H, W, 3]` frame by a policy.

    `short_side` scales the shorter side to `image_size` and keeps the aspect
    ratio (UCF101's 320x240 becomes the R(2+1)D paper's 171x128). `pad` fits
    the frame inside an `image_size` square and pads with black, as the
    tutorial's `tf.image.resize_with_pad` does.
    """
    height, width = frame.shape[:2]
    out_h, out_w = resized_shape(height, width, policy, image_size)
    if policy == "pad":
        scale = min(image_size / height, image_size / width)
        inner_h, inner_w = round(height * scale), round(width * scale)
    else:
        inner_h, inner_w = out_h, out_w
    interpolation = cv2.INTER_AREA if inner_h < height else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (inner_w, inner_h), interpolation=interpolation)
    if policy == "pad":
        top, left = (out_h - inner_h) // 2, (out_w - inner_w) // 2
        padded = np.zeros((out_h, out_w, 3), np.uint8)
        padded[top:top + inner_h, left:left + inner_w] = resized
        resized = padded
    return resized


def encode_jpeg(frame, quality=90, *, bgr=False):
    """Encodes one uint8 RGB (or, with `bgr`, OpenCV's BGR) frame `[H, W, 3]` as JPEG bytes."""
    if not bgr:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise VideoDecodeError("OpenCV could not JPEG-encode a frame")
    return buffer.tobytes()


def encode_video(path, *, resize, image_size, jpeg_quality=90, fps=None, max_frames=None):
    """Decodes, resizes and JPEG-encodes a video file, one frame at a time.

    The Beam job and `scripts/predict.py` both call this, so a video becomes
    frames the same way at preprocessing and at inference. Frames stay in
    OpenCV's BGR from decoder to encoder: the JPEG holds the same RGB image,
    without two colour conversions per frame.

    Returns:
        `(jpegs, height, width, fps)`: the JPEG bytes of each frame, the frame
        size after resizing, and the stored frame rate.
    """
    jpegs = []
    with VideoFile(path) as clip:
        for frame in clip.frames(fps=fps, max_frames=max_frames, rgb=False):
            frame = resize_frame(frame, resize, image_size)
            jpegs.append(encode_jpeg(frame, jpeg_quality, bgr=True))
        height, width = frame.shape[:2]
        return jpegs, height, width, clip.stored_fps(fps)
