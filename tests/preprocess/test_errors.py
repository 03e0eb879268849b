"""User errors: the one-line ArgumentParser, its closest-flag suggestion, run_command, and
writes refused for want of room."""

import errno

import pytest

from preprocess import errors


def _parser(**kwargs):
    parser = errors.ArgumentParser(prog="python tool.py", **kwargs)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning_rate", type=float)
    return parser


@pytest.mark.parametrize("argv,message", [
    (["--epoch", "3"], "unknown argument --epoch; did you mean --epochs?"),
    (["--eval_clip=3"], "unknown argument --eval_clip; see python tool.py --help"),
    (["records/"], "unexpected argument records/; every value follows its flag "
                   "(see python tool.py --help)"),
    (["--epochs", "x"], "argument --epochs: invalid int value: 'x'; see python tool.py --help"),
    (["--epochs"], "argument --epochs: expected one argument; see python tool.py --help"),
])
def test_misuse_is_one_usage_error_line(argv, message):
    with pytest.raises(errors.UsageError) as caught:
        _parser().parse_args(argv)
    assert str(caught.value) == message
    assert isinstance(caught.value, errors.UserError)


def test_no_prefix_matching():
    # argparse alone would take --learning for --learning_rate.
    with pytest.raises(errors.UsageError, match="unknown argument --learning; did you mean "
                                                "--learning_rate?"):
        _parser().parse_args(["--learning", "0.1"])
    assert _parser().parse_args(["--learning_rate", "0.1"]).learning_rate == 0.1


def test_the_hint_says_where_to_look():
    with pytest.raises(errors.UsageError, match="; see the manual$"):
        _parser(hint="see the manual").parse_args(["--zzz"])


def test_flags_lists_every_option_string():
    assert _parser().flags() == ["-h", "--help", "--epochs", "--learning_rate"]
    assert _parser(add_help=False).flags() == ["--epochs", "--learning_rate"]


def test_unknown_flag_message_can_say_why_and_show_an_example():
    known = ["--source", "--runner"]
    kwargs = dict(hint="see --help", explanation="neither the job's nor a Beam option",
                  example="--source DIR")
    assert errors.unknown_flag_message(["--sourc=x"], known, **kwargs) == (
        "unknown flag --sourc, neither the job's nor a Beam option; did you mean --source?")
    assert errors.unknown_flag_message(["--zzz"], known, **kwargs) == (
        "unknown flag --zzz, neither the job's nor a Beam option; see --help")
    # The first flag is named, even after a stray value.
    assert errors.unknown_flag_message(["x", "--runnr"], known, **kwargs).startswith(
        "unknown flag --runnr,")
    assert errors.unknown_flag_message(["x"], known, **kwargs) == (
        "unexpected argument x; every value follows its flag, e.g. --source DIR")


def test_run_command_returns_the_status_of_main():
    assert errors.run_command(lambda argv: 0, []) == 0
    assert errors.run_command(lambda argv: len(argv), ["a", "b"]) == 2


def test_run_command_turns_a_user_error_into_one_line_and_status_2(capsys):
    def main(argv):
        print("started")
        raise errors.SplitError("split train has no video; add --per_class")

    assert errors.run_command(main, []) == errors.USAGE_STATUS == 2
    captured = capsys.readouterr()
    assert captured.err == "error: split train has no video; add --per_class\n"
    assert captured.out == "started\n"
    assert errors.run_command(lambda argv: _parser().parse_args(argv), ["--epoch"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: unknown argument --epoch; did you mean --epochs?"]


def test_run_command_says_a_full_disk_in_one_line(capsys):
    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/out/predictions.csv")

    assert errors.run_command(main, []) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: could not write /out/predictions.csv (No space left on device); free space "
        "(or raise the file-size limit) and run the same command again"]


def test_run_command_keeps_the_traceback_of_a_bug():
    def main(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        errors.run_command(main, [])


class _OpError(Exception):
    """TensorFlow's errors carry a `message`; by default this one reads like its SaveV2's."""

    def __init__(self, message=("{{function_node __wrapped__SaveV2}} /runs/a/saved_model."
                                "partial/variables/variables_temp/part-00000; File too large "
                                "[Op:SaveV2]")):
        super().__init__(message)
        self.message = message


def test_an_error_met_while_handling_a_full_disk_keeps_its_traceback():
    full = OSError(errno.ENOSPC, "No space left on device", "/out/a")
    try:
        try:
            raise full
        except OSError:
            raise NameError("a bug in the handler")
    except NameError as bug:
        assert errors.out_of_room(bug) is None  # met while handling: not the refusal
    try:
        raise RuntimeError("could not save") from full
    except RuntimeError as wrapper:
        assert errors.out_of_room(wrapper) == ("/out/a", "No space left on device")
    beam = ("Traceback (most recent call last):\n  ...\nOSError: [Errno 28] No space left "
            "on device\n\nDuring handling of the above exception, another exception "
            "occurred:\n\nTraceback (most recent call last):\n  ...\n")
    assert errors.out_of_room(RuntimeError(beam + "NameError: name 'x' is not defined")) is None
    assert errors.out_of_room(RuntimeError(
        beam + "RuntimeError: OSError: [Errno 28] No space left on device [while running "
        "'Decode']\n")) == (None, "No space left on device")


@pytest.mark.parametrize("error, room", [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/a/history.csv"),
     ("/runs/a/history.csv", "No space left on device")),
    (OSError(errno.EFBIG, "File too large"), (None, "File too large")),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), (None, "Disk quota exceeded")),
    (_OpError(), ("/runs/a/saved_model.partial/variables/variables_temp/part-00000",
                  "File too large")),
    (_OpError("/runs/my run/logs/train/events.out; No space left on device\n\tFailed to "
              "flush 11 events"),
     ("/runs/my run/logs/train/events.out", "No space left on device")),
    (OSError(errno.EACCES, "Permission denied", "/runs/a"), None),
    (FileNotFoundError(errno.ENOENT, "No such file", "x"), None),
    (ValueError("File too large"), None),
])
def test_a_write_refused_for_want_of_room_is_known_by_its_errno_or_message(error, room):
    assert errors.out_of_room(error) == room
    if room:
        again = errors.no_room("/runs/a/model.keras", room[1])
        assert errors.out_of_room(again) == ("/runs/a/model.keras", room[1])
