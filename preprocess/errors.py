"""The one kind of error a user can fix: its message names the problem and the fix.

Every entry point (`python -m preprocess`, `train.py`, `scripts/predict.py`)
catches `UserError` alone and prints it as one `error:` line; anything else
is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A request or an input that cannot be used; the message says what to fix."""


class SplitError(UserError):
    """A split request or split list that cannot be used; the message says what is available."""
