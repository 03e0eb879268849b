"""The one kind of error a user can fix: its message names the problem and the fix.

Every entry point (`python -m preprocess`, `train.py`, `scripts/predict.py`,
`scripts/evaluate.py`) runs its work through `run_command`, which prints a
`UserError` alone as one `error:` line; anything else is a bug and keeps its
traceback. Their command lines are read by `ArgumentParser`, whose misuse is
such an error too. `out_of_room` knows a write refused for want of room (a
full disk, a file-size limit, a quota) however it was raised, so that each
entry point can say that too in one line; `full_disk_said_once` keeps Beam's
own tracebacks of one out of the terminal.
"""

import argparse
import contextlib
import difflib
import errno
import logging
import os
import re
import sys
import threading

USAGE_STATUS = 2  # argparse's own status for a bad command line


class UserError(ValueError):
    """A request or an input that cannot be used; the message says what to fix."""


class SplitError(UserError):
    """A split request or split list that cannot be used; the message says what is available."""


class UsageError(UserError):
    """A command line that cannot be carried out; the message says what to fix."""


class PreprocessError(UserError):
    """A request the preprocessing job cannot carry out; the message says what to fix."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse without prefix matching, whose errors raise one-line `UsageError`s.

    argparse would print the usage and exit; a tired user needs the one
    thing wrong, and a misspelt flag gets the closest real one suggested.

    Args:
        hint: where the message sends the user. Defaults to `see PROG --help`.
    """

    def __init__(self, *args, hint=None, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.hint = hint or f"see {self.prog} --help"

    def error(self, message):
        unknown = message.partition("unrecognized arguments: ")[2].split()
        if unknown:
            raise UsageError(unknown_flag_message(unknown, self.flags(), self.hint))
        raise UsageError(f"{message}; {self.hint}")

    def actions(self):
        """The parser's arguments: the one reader of argparse's private list of them."""
        return list(self._actions)

    def flags(self):
        """Every option string of the parser."""
        return [flag for action in self.actions() for flag in action.option_strings]


def unknown_flag_message(unknown, known, hint, *, explanation=None, example=None):
    """What to say of the first argument no parser took, with the closest known flag.

    Args:
        unknown: the arguments no parser took, in command-line order.
        known: every flag the command knows; the closest one is suggested.
        hint: where the message sends the user when no flag is close.
        explanation: why the flag is unknown, said after its name, e.g. `neither
            the job's nor a Beam pipeline option`. Defaults to none: `unknown
            argument FLAG`.
        example: a flag and its value, shown to a stray value instead of the
            hint. Defaults to none.
    """
    flag = next((arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")), None)
    if flag is None:
        return (f"unexpected argument {unknown[0]}; every value follows its flag"
                + (f", e.g. {example}" if example else f" ({hint})"))
    close = difflib.get_close_matches(flag, known, n=1)
    head = f"unknown flag {flag}, {explanation}" if explanation else f"unknown argument {flag}"
    return head + (f"; did you mean {close[0]}?" if close else f"; {hint}")


# A write refused for want of room: a full disk, a file-size limit, a quota.
_NO_ROOM = {code: os.strerror(code) for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)}
# TensorFlow's own writers (events, SavedModel variables) say it as "PATH; REASON",
# after the op's "{{function_node ...}} " prefix, if any; a path may hold spaces.
_NO_ROOM_IN_TF = re.compile(
    r"(?:^(?!\{\{)|\}\} )([^\n]+?); (" + "|".join(_NO_ROOM.values()) + ")", re.MULTILINE)
_ERRNO_IN_TEXT = re.compile(r"OSError: \[Errno (\d+)\]")


def out_of_room(error):
    """`(path, reason)` if `error` is a write refused for want of room, else None.

    Reads Python's `OSError` by its errno, TensorFlow's `OpError` by its
    message (without importing TensorFlow), a Beam runner's re-raised error
    by its last line, and the errors each was raised from (`raise ... from`,
    not an error met while handling one); `path` is None when the error does
    not name the file.
    """
    while error is not None:
        if isinstance(error, OSError) and error.errno in _NO_ROOM:
            return error.filename, os.strerror(error.errno)
        found = _NO_ROOM_IN_TF.search(str(getattr(error, "message", "")))
        if found:
            return found.group(1), found.group(2)
        # Beam's runners re-raise a worker's error as text, its traceback's last line
        # "...OSError: [Errno 27] ...": the last line only, so that an error raised
        # while handling one keeps its own traceback.
        lines = str(error).rstrip().splitlines()
        errno_in_text = _ERRNO_IN_TEXT.search(lines[-1]) if lines else None
        if errno_in_text and int(errno_in_text.group(1)) in _NO_ROOM:
            return None, os.strerror(int(errno_in_text.group(1)))
        error = error.__cause__  # `raise ... from error`: a wrapper of the refusal
    return None


def no_room_message(path, reason, then=None):
    """What to say of a write to `path` refused for `reason`; `then`: what a rerun does."""
    return (f"could not write {path} ({reason}); free space (or raise the file-size limit) "
            "and run the same command again" + (f": {then}" if then else ""))


def no_room(path, reason):
    """The `OSError` of a write to `path` refused for `reason`, as `out_of_room` gave it."""
    code = next((code for code, text in _NO_ROOM.items() if text == reason), errno.ENOSPC)
    return OSError(code, reason, path)


class _WithoutNoRoomTracebacks:
    """A stream that passes everything on but the tracebacks of writes refused for want of room.

    Beam's SDK worker prints each failed bundle's traceback to `sys.stderr`
    (then a newline), from its own threads, before the runner re-raises it.
    """

    def __init__(self, stream):
        self.stream = stream
        self._thread = threading.local()  # each thread's print: its text, then a newline

    def write(self, text):
        dropped, self._thread.dropped = getattr(self._thread, "dropped", False), False
        if text.startswith("Traceback (most recent call last)") and out_of_room(
                RuntimeError(text)):
            self._thread.dropped = True
            return len(text)
        if dropped and text == "\n":  # the newline print() adds to a dropped traceback
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def full_disk_said_once():
    """Keeps what Beam says of a write refused for want of room out of the terminal.

    Beam's runners log a worker's error, traceback and all, and print it
    too, before they re-raise it; around a job whose caller says a full disk
    in one line (`preprocess.pipeline.run`), they are held back. Every other
    record and line passes.
    """
    def keep(record):
        try:
            error = record.exc_info[1] if record.exc_info else RuntimeError(record.getMessage())
        except Exception:  # a record logging cannot format: logging's to report, not ours
            return True
        return out_of_room(error) is None

    with contextlib.suppress(ImportError):  # its logger, made on import; not in every Beam
        import apache_beam.runners.worker.sdk_worker  # noqa: F401
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("apache_beam")]
    for logger in loggers:
        logger.addFilter(keep)
    stderr, sys.stderr = sys.stderr, _WithoutNoRoomTracebacks(sys.stderr)
    try:
        yield
    finally:
        sys.stderr = stderr
        for logger in loggers:
            logger.removeFilter(keep)


def run_command(main, argv=None):
    """Calls `main(argv)`; a `UserError` becomes one `error:` line and exit status 2.

    So does a write refused for want of room (`out_of_room`), which is not a
    bug either; anything else keeps its traceback.
    """
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_STATUS
    except Exception as error:
        room = out_of_room(error)
        if room is None:
            raise
        print(f"error: {no_room_message(room[0] or 'its output', room[1])}", file=sys.stderr)
        return USAGE_STATUS
