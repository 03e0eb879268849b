"""A built-in synthetic action set whose classes differ only in motion.

Writes UCF101-layout AVIs (`UCF101/v_<Class>_gNN_cNN.avi`, XviD, 320x240,
25 fps). Every class shows the same kinds of things: a shape of random kind,
colour and size on a group-specific textured background. Only how it moves
tells the class: the direction of a slide, the sense of a turn, growing or
shrinking. No single frame tells the classes apart; a clip does.

    python -m preprocess.synthetic --output_dir data/synthetic
"""

import argparse
import math
import os

import cv2
import numpy as np

MOTION_CLASSES = ("SlideLeft", "SlideRight", "SlideUp", "SlideDown",
                  "TurnClockwise", "TurnCounterclockwise", "Grow", "Shrink")


def _scene(rng, height, width):
    """A group's scene: a smooth random texture, without its colour."""
    noise = rng.normal(0, 12, size=(height // 8, width // 8, 3))
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR)


def _background(rng, scene):
    """The scene under a clip's own lighting: a random base colour per clip."""
    base = rng.integers(40, 200, size=3)
    return np.clip(base + scene, 0, 255).astype(np.uint8)


def _draw_shape(frame, kind, center, size, angle, color):
    cx, cy = center
    half = size / 2
    if kind == "bar":
        # A long bar shows its orientation, which is what a turn changes.
        box = ((cx, cy), (size, max(6.0, size / 4)), math.degrees(angle))
        points = cv2.boxPoints(box)
    else:
        corners = 3 if kind == "triangle" else 4
        points = np.array([
            (cx + half * math.cos(angle + 2 * math.pi * i / corners),
             cy + half * math.sin(angle + 2 * math.pi * i / corners))
            for i in range(corners)])
    cv2.fillPoly(frame, [np.round(points).astype(np.int32)], color, cv2.LINE_AA)
    # A dot marks one end, so a half turn differs from no turn.
    tip = (int(cx + 0.4 * size * math.cos(angle)), int(cy + 0.4 * size * math.sin(angle)))
    cv2.circle(frame, tip, max(2, int(size / 10)), (255 - np.array(color)).tolist(), -1)


def render_clip(class_name, rng, *, num_frames=50, height=240, width=320,
                background=None):
    """Renders one clip of a motion class as uint8 RGB `[num_frames, H, W, 3]`."""
    if background is None:
        background = _background(rng, _scene(rng, height, width))
    kind = rng.choice(["bar", "square", "triangle"])
    color = rng.integers(0, 256, size=3).tolist()
    size = float(rng.uniform(60, 100))
    angle = float(rng.uniform(0, 2 * math.pi))
    cx, cy = float(rng.uniform(0.3, 0.7) * width), float(rng.uniform(0.3, 0.7) * height)
    t = np.linspace(-0.5, 0.5, num_frames)
    travel = float(rng.uniform(0.35, 0.5))
    frames = []
    for step in t:
        x, y, s, a = cx, cy, size, angle
        if class_name == "SlideLeft":
            x = cx - step * travel * width
        elif class_name == "SlideRight":
            x = cx + step * travel * width
        elif class_name == "SlideUp":
            y = cy - step * travel * height
        elif class_name == "SlideDown":
            y = cy + step * travel * height
        elif class_name == "TurnClockwise":
            a = angle + step * math.pi
        elif class_name == "TurnCounterclockwise":
            a = angle - step * math.pi
        elif class_name == "Grow":
            s = size * math.exp(step * 1.6)
        elif class_name == "Shrink":
            s = size * math.exp(-step * 1.6)
        else:
            raise ValueError(f"unknown synthetic class {class_name!r}; choose from "
                             f"{', '.join(MOTION_CLASSES)}")
        frame = background.copy()
        _draw_shape(frame, kind, (x, y), s, a, color)
        frames.append(frame)
    return np.stack(frames)


def write_video(path, frames, fps=25):
    """Writes uint8 RGB frames as an XviD AVI, UCF101's codec."""
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), fps,
                             (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write XviD video to {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def write_dataset(output_dir, *, classes=MOTION_CLASSES, groups=4, clips_per_group=3,
                  num_frames=50, height=240, width=320, fps=25, seed=0):
    """Writes the synthetic set to `output_dir/UCF101/`; returns the video paths.

    Each group has its own scene texture, as a UCF101 group shares actor and
    scene, so a group-aware split really tests generalisation to new scenes.
    Group g has the same scene in every class, so the scene never gives the
    class away, and each clip its own lighting (base colour), so a model
    cannot lean on the colours of a few training scenes.
    """
    root = os.path.join(output_dir, "UCF101")
    os.makedirs(root, exist_ok=True)
    paths = []
    for class_index, class_name in enumerate(classes):
        for group in range(1, groups + 1):
            scene = _scene(np.random.default_rng([seed, group]), height, width)
            rng = np.random.default_rng([seed, class_index, group])
            for clip in range(1, clips_per_group + 1):
                frames = render_clip(class_name, rng, num_frames=num_frames,
                                     height=height, width=width,
                                     background=_background(rng, scene))
                path = os.path.join(root, f"v_{class_name}_g{group:02d}_c{clip:02d}.avi")
                write_video(path, frames, fps)
                paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m preprocess.synthetic",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True,
                        help="where to write UCF101/<video>.avi")
    parser.add_argument("--groups", type=int, default=4,
                        help="groups (scenes) per class (default: 4)")
    parser.add_argument("--clips_per_group", type=int, default=3,
                        help="clips per group (default: 3)")
    parser.add_argument("--num_frames", type=int, default=50,
                        help="frames per video, at 25 fps (default: 50)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the scenes and motions (default: 0)")
    args = parser.parse_args(argv)
    paths = write_dataset(args.output_dir, groups=args.groups,
                          clips_per_group=args.clips_per_group,
                          num_frames=args.num_frames, seed=args.seed)
    print(f"synthetic: wrote {len(paths)} videos of {len(MOTION_CLASSES)} classes "
          f"to {os.path.join(args.output_dir, 'UCF101')}")


if __name__ == "__main__":
    main()
