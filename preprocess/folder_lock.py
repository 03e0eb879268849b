"""One writer per folder: the lock `train.py` holds on a run folder and the job on its records.

A second launch of the same command, from another terminal or a retrying
scheduler, must stop at once and change nothing, instead of interleaving
its files with the first's. The lock is an OS lock (POSIX `fcntl` record
lock) on `.lock` inside the folder, which also records who holds it: the
kernel drops it when its process ends however it ends, even by `kill -9`,
so a file left behind never blocks a later resume. POSIX locks, unlike
`flock`, also hold across NFS clients that run a lock manager.

Object stores (`gs://`) have no such lock, and none is taken there: what
guards a remote records folder is the job's refusal to write into one that
already holds records without `--overwrite`.
"""

import datetime
import errno
import fcntl
import json
import os
import socket

from preprocess.errors import UserError

LOCK_NAME = ".lock"


class FolderInUseError(UserError):
    """Another process is writing into the folder; the message names it."""


class FolderLockError(UserError):
    """A folder that cannot be written or locked; the message says why."""


class FolderLock:
    """Holds the writer's lock of a local folder, as a context manager.

    Args:
        folder: the folder; created (with its parents) if missing, and removed
            again on release if it was created here and holds nothing but the
            lock, so a command refused before any work leaves nothing behind.
        flag: the flag that named the folder, for the message.
    """

    def __init__(self, folder, flag="--output_dir"):
        self.folder = str(folder)
        self.flag = flag
        self.path = os.path.join(self.folder, LOCK_NAME)
        self._handle = None
        self._created = []

    def acquire(self):
        """Takes the lock, or raises `FolderInUseError` naming its holder; changes nothing then."""
        missing, parent = [], os.path.abspath(self.folder)
        while not os.path.exists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        try:
            os.makedirs(self.folder, exist_ok=True)
            # Not "w": truncating would erase the holder's record before we know we hold it.
            handle = open(self.path, "a+")
        except OSError as error:
            raise FolderLockError(f"cannot write into {self.folder} ({error.strerror}); "
                                  f"choose another {self.flag}") from None
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read()
            handle.close()
            # Nothing is removed here: a folder this call made may be another's by now.
            if error.errno in (errno.EACCES, errno.EAGAIN):
                raise FolderInUseError(f"{self.folder} is being written by another process "
                                       f"({describe_holder(holder)}); wait for it to finish, "
                                       f"stop it, or choose another {self.flag}") from None
            raise FolderLockError(f"cannot lock {self.path} ({error.strerror}); on a network "
                                  "file system without a lock manager, write to a local "
                                  f"folder or choose another {self.flag}") from None
        self._created = missing
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}))
        handle.flush()
        self._handle = handle
        return self

    def release(self):
        if self._handle is not None:
            # Folders made here and left empty go while the lock is still held, so
            # that no other writer's lock file is ever removed.
            self._remove_created()
            self._handle.close()  # closing drops the lock
            self._handle = None

    def _remove_created(self):
        """Removes the folders `acquire` made, if nothing but the lock was put in them."""
        for folder in self._created:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            if set(names) - {LOCK_NAME} - {os.path.basename(p) for p in self._created}:
                return
        for folder in self._created:  # innermost first
            try:
                os.remove(os.path.join(folder, LOCK_NAME))
            except FileNotFoundError:
                pass
            try:
                os.rmdir(folder)
            except OSError:
                return
        self._created = []

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def describe_holder(text):
    """The holder a lock file records, in words."""
    try:
        holder = json.loads(text)
        return (f"host {holder['host']}, process {holder['pid']}, started "
                f"{holder['started']}")
    except (ValueError, KeyError, TypeError):
        return "its holder did not record itself yet"
