"""The Beam job that decodes every video once into sharded TFRecords.

Run it as `python -m preprocess --source SRC --output_dir OUT [options]
[Beam pipeline options]`; `run(argv)` is what the command and the tests call.
The driver reads the flags (`preprocess.options`), lists the source and assigns
splits and labels (`preprocess.tasks`) before any Beam work, so a bad request
fails at once. The pipeline then reshuffles the video list, decodes each video
on the workers into fragment files, cuts each split's shards from them
(`preprocess.shards`), and routes unreadable videos to `failures.jsonl`. The
launcher checks the counts the pipeline reports, without opening a shard, and
writes the manifest last (`preprocess.outputs`).
"""

import collections
import contextlib
import datetime
import json
import sys

import apache_beam as beam
import cv2
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from preprocess import manifest as manifest_lib
from preprocess import progress, schema, shards, video
from preprocess.errors import (PreprocessError, full_disk_said_once, no_room_message,
                               out_of_room, run_command)
from preprocess.folder_lock import FolderLock
from preprocess.options import PreprocessOptions, check_args, is_local_runner, pipeline_options
from preprocess.outputs import JOB_OUTPUTS, finish, prepare_output_dir, print_counters
from preprocess.sources import open_source
from preprocess.tasks import VideoUnavailable, plan_tasks


class DecodeVideoFn(beam.DoFn):
    """Decodes, resizes and JPEG-encodes each video into a record of a fragment file.

    Emits, when its bundle ends, the bundle's `shards.Fragment`s. A video that
    cannot be used goes to the `failed` output with the reason; it never
    raises, so one bad file cannot stop the job.
    """
    FAILED = "failed"

    def __init__(self, source, output_dir, *, fps, max_frames, resize, image_size,
                 jpeg_quality, progress=None):
        self.source_spec = source
        self.output_dir = output_dir
        self.fps = fps
        self.max_frames = max_frames
        self.resize = resize
        self.image_size = image_size
        self.jpeg_quality = jpeg_quality
        self.progress = progress
        self.decoded = beam.metrics.Metrics.counter("preprocess", "videos_written")
        self.failed = beam.metrics.Metrics.counter("preprocess", "videos_failed")
        self.frames = beam.metrics.Metrics.counter("preprocess", "frames_written")

    def setup(self):
        # The runner parallelises over videos; OpenCV's own threads would only
        # oversubscribe the cores.
        cv2.setNumThreads(1)
        self._source = open_source(self.source_spec)

    def teardown(self):
        self._source.close()

    def start_bundle(self):
        self._writer = shards.FragmentWriter(self.output_dir)

    def process(self, task):
        ref = task.ref
        try:
            if ref.problem:
                raise VideoUnavailable(ref.problem)
            with self._source.local_copy(ref) as path:
                jpegs, height, width, fps = video.encode_video(
                    path, resize=self.resize, image_size=self.image_size,
                    jpeg_quality=self.jpeg_quality, fps=self.fps,
                    max_frames=self.max_frames)
            example = schema.encode_video_example(
                jpegs, label=task.label, label_text=ref.class_name,
                video_id=ref.video_id, group=ref.group, clip=ref.clip,
                height=height, width=width, fps=fps)
        except Exception as error:  # Any failure is the video's, not the job's.
            self.failed.inc()
            reason = (str(error) if isinstance(error, VideoUnavailable)
                      else f"{type(error).__name__}: {error}")
            yield beam.pvalue.TaggedOutput(self.FAILED, {
                "path": ref.location, "video_id": ref.video_id,
                "split": task.split, "class": ref.class_name, "reason": reason})
        else:
            self._writer.write(task.split, ref.video_id, example,
                               (ref.class_name, len(jpegs), height, width))
            self.decoded.inc()
            self.frames.inc(len(jpegs))
        finally:
            if self.progress:
                progress.tick(self.progress)

    def finish_bundle(self):
        for fragment in self._writer.close():
            yield WindowedValue(fragment, MIN_TIMESTAMP, [GlobalWindow()])


class DecodeVideos(beam.PTransform):
    """Spreads the video list over workers and decodes it.

    Returns a tagged result with the fragments as `fragments` and failures
    as `failed`.
    """

    def __init__(self, decode_fn):
        super().__init__()
        self.decode_fn = decode_fn

    def expand(self, tasks):
        return (tasks
                # Reshuffle the small list, not the decoded frames: it breaks
                # fusion with Create so the decode work spreads over workers.
                | "Reshuffle" >> beam.Reshuffle()
                | "Decode" >> beam.ParDo(self.decode_fn).with_outputs(
                    DecodeVideoFn.FAILED, main="fragments"))


class WriteShards(beam.PTransform):
    """Cuts the fragments into each split's shards and writes them in parallel.

    Each split's records go into its shards in an order drawn from `seed`
    alone, so every shard is a fair sample and a rerun writes the same bytes.
    Returns one manifest entry per shard: split, path, records, bytes.
    """

    def __init__(self, output_dir, split_shards, seed):
        super().__init__()
        self.output_dir = output_dir
        self.split_shards = split_shards
        self.seed = seed

    def expand(self, fragments):
        return (fragments
                | "CollectFragments" >> beam.combiners.ToList()
                | "PlanShards" >> beam.FlatMap(shards.plan_shards, self.output_dir,
                                               self.split_shards, seed=self.seed)
                | "SpreadShards" >> beam.Reshuffle()
                | "CopyRanges" >> beam.Map(shards.write_shard))


class SummariseFn(beam.CombineFn):
    """Counts videos and frames per split and class, and collects frame sizes."""

    def create_accumulator(self):
        return {"videos": collections.Counter(), "frames": collections.Counter(),
                "sizes": set()}

    def add_input(self, acc, fragment):
        for class_name, num_frames, height, width in fragment.videos:
            acc["videos"][(fragment.split, class_name)] += 1
            acc["frames"][fragment.split] += num_frames
            acc["sizes"].add((height, width))
        return acc

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for acc in accumulators:
            merged["videos"].update(acc["videos"])
            merged["frames"].update(acc["frames"])
            merged["sizes"] |= acc["sizes"]
        return merged

    def extract_output(self, acc):
        return json.dumps({
            "videos": [[split, cls, n] for (split, cls), n in sorted(acc["videos"].items())],
            "frames": dict(acc["frames"]),
            "sizes": sorted(acc["sizes"]),
        })


def build_pipeline(pipeline, tasks, decode_fn, output_dir, split_shards, seed):
    """The job as a handful of labelled steps: list, decode, cut shards, summarise."""
    decoded = (pipeline
               | "ListVideos" >> beam.Create(tasks)
               | "DecodeVideos" >> DecodeVideos(decode_fn))
    for name, lines in (
            ("shards", decoded.fragments
             | "WriteShards" >> WriteShards(output_dir, split_shards, seed)
             | "ShardToJson" >> beam.Map(json.dumps, sort_keys=True)),
            ("summary", decoded.fragments
             | "Summarise" >> beam.CombineGlobally(SummariseFn())),
            ("failures", decoded[DecodeVideoFn.FAILED]
             | "FailureToJson" >> beam.Map(json.dumps, sort_keys=True))):
        lines | f"Write_{name}" >> beam.io.WriteToText(
            FileSystems.join(output_dir, JOB_OUTPUTS[name]), num_shards=1,
            shard_name_template="")


def run(argv=None):
    """Runs the job; returns the manifest it wrote. Raises on bad requests."""
    options = pipeline_options(sys.argv[1:] if argv is None else list(argv))
    args = options.view_as(PreprocessOptions)
    request = check_args(args)
    # One writer per local folder; on object stores --overwrite's refusal is the guard.
    local = FileSystems.get_scheme(args.output_dir) is None
    with FolderLock(args.output_dir) if local else contextlib.nullcontext():
        try:
            with full_disk_said_once():
                return write_records(args, request, options)
        except Exception as error:  # a full disk, however deep in Beam it was met
            room = out_of_room(error)
            if room is None:
                raise
            raise PreprocessError(no_room_message(room[0] or args.output_dir, room[1],
                                                  "it starts the job over")) from None


def write_records(args, request, options):
    """Lists, decodes and writes the records, checks them and writes the manifest last."""
    listing, classes, tasks, split_spec = plan_tasks(args, request)
    selected = collections.Counter(task.split for task in tasks)
    split_shards = {name: args.num_shards for name in sorted(selected)}
    prepare_output_dir(args.output_dir, args.overwrite)
    print(f"preprocess: {len(tasks)} videos of {len(classes)} classes from "
          f"{args.source} (layout {listing.layout}): "
          + ", ".join(f"{k}={v}" for k, v in sorted(selected.items())), flush=True)

    started = datetime.datetime.now(datetime.timezone.utc)
    with contextlib.ExitStack() as stack:
        watch = (stack.enter_context(progress.Progress(len(tasks)))
                 if is_local_runner(options) else None)
        decode_fn = DecodeVideoFn(args.source, args.output_dir, fps=args.fps,
                                  max_frames=args.max_frames, resize=args.resize,
                                  image_size=args.image_size,
                                  jpeg_quality=args.jpeg_quality,
                                  progress=watch.path if watch else None)
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, tasks, decode_fn, args.output_dir, split_shards, args.seed)
        result = pipeline.run()
        result.wait_until_finish()
    seconds = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    print_counters(result)

    manifest = finish(args, listing, classes, selected, split_spec, started, seconds)
    manifest_lib.write_manifest(args.output_dir, manifest)
    return manifest


def main(argv=None):
    """Command-line entry: one-line errors and a non-zero exit, never a traceback."""
    def command(argv):
        run(argv)
        return 0  # The manifest is for callers of `run`; the shell gets a status.
    return run_command(command, argv)
