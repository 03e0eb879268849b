"""One writer per folder: a second writer is refused by name, a killed one blocks nothing."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from preprocess.folder_lock import LOCK_NAME, FolderInUseError, FolderLock


def _holder(folder):
    """A process that holds the folder's lock until it is killed."""
    script = textwrap.dedent(f"""
        import time
        from preprocess.folder_lock import FolderLock
        lock = FolderLock({str(folder)!r}).acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_naming_the_first_and_changing_nothing(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        (folder / "history.csv").write_text("epoch\n")
        before = {p: p.read_bytes() for p in folder.iterdir()}
        with pytest.raises(FolderInUseError) as error:
            FolderLock(folder).acquire()
        message = str(error.value)
        assert f"process {holder.pid}" in message and socket.gethostname() in message
        assert "--output_dir" in message and "\n" not in message
        assert {p: p.read_bytes() for p in folder.iterdir()} == before
    finally:
        holder.kill()
        holder.wait()


def test_a_writer_killed_with_sigkill_leaves_nothing_that_blocks(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (folder / LOCK_NAME).exists()  # the file stays; the OS dropped the lock
    with FolderLock(folder) as lock:
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert lock.path == str(folder / LOCK_NAME)


def test_a_folder_made_for_the_lock_goes_again_when_nothing_was_written(tmp_path):
    nested = tmp_path / "runs" / "a"
    with FolderLock(nested):
        assert nested.is_dir()
    assert not (tmp_path / "runs").exists()  # a refused command leaves nothing behind
    with FolderLock(nested):
        (nested / "config.json").write_text("{}")
    assert sorted(os.listdir(nested)) == [LOCK_NAME, "config.json"]
    existing = tmp_path / "existing"
    existing.mkdir()
    with FolderLock(existing):
        pass
    assert existing.is_dir()  # never removes a folder it did not make
