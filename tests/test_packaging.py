"""The job as remote runners get it: the staged source distribution, its requirements, and Beam's
portable path."""

import json
import os
import pathlib
import re
import site
import subprocess
import sys
from importlib import metadata

import pytest

from conftest import REPO, SYNTHETIC
from records import read_split

VIDEOS = 8 * SYNTHETIC["groups"] * SYNTHETIC["clips_per_group"]


@pytest.mark.slow
def test_the_staged_package_installs_and_runs_like_a_dataflow_worker(synthetic_dir, tmp_path):
    from apache_beam.runners.portability.stager import Stager

    # What `--setup_file ./setup.py` stages: Beam builds it with its own stager.
    sdist = Stager._build_setup_package(str(REPO / "setup.py"), str(tmp_path))
    venv = tmp_path / "worker-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], capture_output=True, text=True,
                             check=True).stdout.strip()
    # No network: the worker reuses the dependencies installed here (their
    # folders only; this checkout's editable install is not among them).
    pathlib.Path(purelib, "reuse_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index",
                              "--no-build-isolation", sdist], capture_output=True, text=True,
                             cwd=tmp_path, env=env)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]

    def worker(*args):
        return subprocess.run([python, *args], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=600)

    where = worker("-c", "import preprocess, train; print(preprocess.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    help_ = worker("-m", "preprocess", "--help")
    assert help_.returncode == 0 and "--layout" in help_.stdout, help_.stderr[-2000:]
    out = tmp_path / "records"
    # Beam's process mode: the workers are fresh interpreters of the new environment.
    job = worker("-m", "preprocess", "--source", str(synthetic_dir), "--output_dir", str(out),
                 "--image_size", "32", "--direct_running_mode=multi_processing")
    assert job.returncode == 0, job.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["all"]["num_videos"] == VIDEOS


@pytest.mark.slow
def test_a_job_through_beams_portable_runner(synthetic_dir, tmp_path):
    # The path Flink and Spark take: the pipeline goes to a job service as
    # a portable proto, and an SDK harness runs the DoFns.
    from preprocess import pipeline
    out = tmp_path / "records"
    manifest = pipeline.run(["--source", str(synthetic_dir), "--output_dir", str(out),
                             "--image_size", "32", "--num_shards", "2",
                             "--runner", "PortableRunner", "--job_endpoint", "embed",
                             "--environment_type", "LOOPBACK"])
    info = manifest["splits"]["all"]
    assert (info["num_videos"], info["num_failed"], len(info["shards"])) == (VIDEOS, 0, 2)
    ids = [video["video_id"] for video in read_split(out, "all")]
    assert len(ids) == len(set(ids)) == VIDEOS
    assert sorted(os.listdir(out)) == [".lock", "all", "failures.jsonl", "manifest.json"]


def test_setup_names_opencvs_headless_build_and_a_gpu_extra():
    from distutils.core import run_setup  # setuptools' copy

    dist = run_setup(str(REPO / "setup.py"), stop_after="init")
    names = [re.split(r"[<>=\[ ;]", requirement)[0] for requirement in dist.install_requires]
    # Dataflow's slim worker images have no libGL.so.1, which the GUI build links.
    assert "opencv-python-headless" in names and "opencv-python" not in names
    assert dist.extras_require["gpu"] == ["tensorflow[and-cuda]>=2.16"]


def test_the_installed_opencv_loads_no_libgl():
    installed = set()
    for name in ("opencv-python", "opencv-python-headless"):
        try:
            metadata.version(name)
            installed.add(name)
        except metadata.PackageNotFoundError:
            pass
    if installed != {"opencv-python-headless"}:
        pytest.skip(f"this environment has {sorted(installed)}; bash scripts/env.sh installs "
                    "the headless build alone")
    code = ("import cv2, numpy as np\n"
            "assert cv2.imencode('.jpg', np.zeros((8, 8, 3), np.uint8))[0]\n"
            "print(any('libGL' in line for line in open('/proc/self/maps')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
