"""The one kind of error a user can fix: its message names the problem and the fix.

Every entry point (`python -m preprocess`, `train.py`, `scripts/predict.py`,
`scripts/evaluate.py`) catches `UserError` alone and prints it as one
`error:` line; anything else is a bug and keeps its traceback. Their command
lines are read by `ArgumentParser`, whose misuse is such an error too.
"""

import argparse
import difflib


class UserError(ValueError):
    """A request or an input that cannot be used; the message says what to fix."""


class SplitError(UserError):
    """A split request or split list that cannot be used; the message says what is available."""


class UsageError(UserError):
    """A command line that cannot be carried out; the message says what to fix."""


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

    def flags(self):
        return [flag for action in self._actions for flag in action.option_strings]


def unknown_flag_message(unknown, known, hint):
    """What to say of the first argument no parser took, with the closest known flag."""
    flag = next((arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")), None)
    if flag is None:
        return f"unexpected argument {unknown[0]}; every value follows its flag ({hint})"
    close = difflib.get_close_matches(flag, known, n=1)
    return f"unknown argument {flag}" + (f"; did you mean {close[0]}?" if close else f"; {hint}")
