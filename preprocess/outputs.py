"""The job's output folder, before and after the pipeline: refusing to mix runs,
clearing Beam's leftovers, and checking the pipeline's counts into the manifest.

Nothing here opens a shard: the checks read what the pipeline wrote beside them.
"""

import collections
import glob
import json
import os
import shutil

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from preprocess import __version__
from preprocess import index as index_lib
from preprocess import manifest as manifest_lib
from preprocess import options, schema, shards
from preprocess.errors import PreprocessError

# What the pipeline writes beside the shards; the launcher reads and removes
# the first two, and `failures.jsonl` stays.
JOB_OUTPUTS = {"summary": "_summary.json", "shards": "_shards.jsonl",
               "failures": manifest_lib.FAILURES_NAME}


def prepare_output_dir(output_dir, overwrite):
    """Refuses to mix runs: an output with records needs `--overwrite`, which clears it."""
    old = [m.path for pattern in (manifest_lib.MANIFEST_NAME,
                                  "*/*" + manifest_lib.RECORD_SUFFIX,
                                  "*/*" + index_lib.SUFFIX, *JOB_OUTPUTS.values())
           for m in FileSystems.match([FileSystems.join(output_dir, pattern)])[0].metadata_list]
    if old and not overwrite:
        raise PreprocessError(f"{output_dir} already holds records; pass --overwrite "
                              "to replace them or choose another --output_dir")
    remove_beam_temp(output_dir)
    if old:
        # The manifest goes first: a folder without one reads as unfinished.
        old.sort(key=lambda path: not path.endswith(manifest_lib.MANIFEST_NAME))
        FileSystems.delete(old)


def remove_beam_temp(output_dir):
    """Removes the fragments and the `beam-temp-*` folders Beam's sinks can leave."""
    if FileSystems.get_scheme(output_dir) is None:
        for pattern in (shards.FRAGMENTS, "beam-temp-*", "*/beam-temp-*"):
            for path in glob.glob(os.path.join(output_dir, pattern)):
                shutil.rmtree(path, ignore_errors=True)
    else:  # Object stores have no empty folders: deleting the files is enough.
        leftovers = [m.path for m in FileSystems.match(
            [FileSystems.join(output_dir, "**")])[0].metadata_list
                     if "/beam-temp-" in m.path or f"/{shards.FRAGMENTS}/" in m.path]
        if leftovers:
            FileSystems.delete(leftovers)


def print_counters(result):
    """Prints the job's Beam counters, as the runner reports them."""
    query = result.metrics().query(MetricsFilter().with_namespace("preprocess"))
    counters = {c.key.metric.name: c.committed for c in query["counters"]}
    if counters:
        print("preprocess: counters " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())),
              flush=True)


def finish(args, listing, classes, selected, split_spec, started, seconds):
    """Checks that nothing was lost, then builds the manifest."""
    outputs = read_job_outputs(args.output_dir)
    split_info = verify_splits(args.output_dir, classes, selected, *outputs)
    total = sum(selected.values())
    out = args.output_dir
    print(f"preprocess: {total} videos in {seconds:.1f} s "
          f"({total / max(seconds, 1e-9):.2f} videos/s); manifest at "
          f"{FileSystems.join(out, manifest_lib.MANIFEST_NAME)}", flush=True)
    failures = outputs[2]
    if failures:
        print(f"preprocess: {len(failures)} videos failed; see "
              f"{FileSystems.join(out, manifest_lib.FAILURES_NAME)}", flush=True)
    return build_manifest(args, listing, classes, split_spec, split_info, outputs[0],
                          started, seconds)


def read_job_outputs(out):
    """The pipeline's summary, shard entries (both then removed) and failure records.

    Also removes the fragments and Beam's temporary files. Nothing here opens a shard.
    """
    def lines(name, remove=True):
        path = FileSystems.join(out, JOB_OUTPUTS[name])
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8")
        if remove:
            FileSystems.delete([path])
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    summary = (lines("summary") or [{}])[0]
    shard_entries = lines("shards")
    failures = lines("failures", remove=False)
    remove_beam_temp(out)
    return summary, shard_entries, failures


def verify_splits(out, classes, selected, summary, shard_entries, failures):
    """Per split: `written + failed == selected`, from the pipeline's own counts.

    The shards' sizes on the filesystem must be the sizes the pipeline wrote.

    Returns:
        The manifest's `splits` entry. Raises `PreprocessError` when counts do
        not add up.
    """
    written_per_class = collections.defaultdict(dict)
    for split, cls, count in summary.get("videos", []):
        written_per_class[split][cls] = count
    failed = collections.Counter(f["split"] for f in failures)
    split_info, problems = {}, []
    for split, count in sorted(selected.items()):
        entries = sorted((e for e in shard_entries if e["split"] == split),
                         key=lambda e: e["path"])
        on_disk = {m.path: m.size_in_bytes for m in FileSystems.match(
            [FileSystems.join(out, split, "*" + manifest_lib.RECORD_SUFFIX)])[0].metadata_list}
        written = sum(e["records"] for e in entries)
        ok = (written == sum(written_per_class[split].values())
              and written + failed[split] == count
              and {e["path"]: e["bytes"] for e in entries} == on_disk)
        print(f"preprocess: {split}: written {written} + failed {failed[split]} "
              f"{'==' if ok else '!='} selected {count}", flush=True)
        if not ok:
            problems.append(split)
        split_info[split] = {
            "num_videos": written,
            "num_failed": failed[split],
            "num_selected": count,
            "num_frames": summary.get("frames", {}).get(split, 0),
            "per_class": {c: written_per_class[split].get(c, 0) for c in classes},
            "shards": [f"{split}/{e['path'].rstrip('/').split('/')[-1]}" for e in entries],
            # Per shard, so a reader can spot a truncated copy without reading it.
            "shard_records": [e["records"] for e in entries],
            "shard_bytes": [e["bytes"] for e in entries],
        }
    if problems:
        raise PreprocessError(f"video counts or shard sizes do not add up in "
                              f"{', '.join(problems)}; the records are incomplete, run "
                              "again with --overwrite")
    return split_info


def build_manifest(args, listing, classes, split_spec, split_info, summary, started,
                   seconds):
    """`manifest.json`: what was written, how, and from what."""
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "package_version": __version__,
        "created": started.isoformat(timespec="seconds"),
        "source": args.source,
        "layout": listing.layout,
        "split_spec": split_spec,
        "classes": classes,
        "splits": split_info,
        "encoding": {"format": "jpeg", "quality": args.jpeg_quality, "color": "rgb",
                     "keys": {"frames": schema.IMAGE_ENCODED,
                              "label": schema.LABEL_INDEX,
                              "label_text": schema.LABEL_TEXT}},
        "geometry": {"resize": args.resize, "image_size": args.image_size,
                     "frame_sizes": summary.get("sizes", [])},
        "fps": args.fps,
        "max_frames": args.max_frames,
        "failures": manifest_lib.FAILURES_NAME,
        "num_ignored_files": len(listing.ignored),
        "seconds": round(seconds, 2),
        "options": options.job_options(args),
    }
