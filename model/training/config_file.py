"""Experiment files: a run's settings kept as YAML or JSON, read and checked like flags.

    python train.py --config experiments/r18.yaml --records records/ --output_dir runs/r18
    python train.py --preset r2plus1d_18 --print_config > experiments/r18.yaml

A file maps setting names (the flags without `--`) to values, and may name a
`preset`; a run's own `config.json` is such a file too. Every value is
checked against its flag's type and choices, so a file is refused in one line
before any work, as a command line is. YAML is read with `yaml.safe_load`: a
config file is data, never code. Importing this module is light (no TensorFlow).
"""

import difflib
import json
import os
import sys

import yaml

from preprocess.errors import UserError

# Where a run reads and writes, and whether it starts over: the command line's
# alone, so that a file (a run's own config.json above all) describes an
# experiment that runs on any records into any folder.
COMMAND_LINE_ONLY = ("records", "output_dir", "overwrite")


class ConfigFileError(UserError):
    """A config file that cannot be read, or holds a setting or value we do not take."""


def setting_actions(parser):
    """`{setting: argparse action}` of the flags a config file may set, in `--help`'s order."""
    return {action.dest: action for action in parser.actions()
            if action.option_strings and action.dest not in COMMAND_LINE_ONLY
            and action.dest not in ("help", "config", "print_config")}


def read_settings(path, parser, nullable=()):
    """The settings of a YAML or JSON file, each checked as its flag would check it.

    Args:
        path: the file; `.json` files are read as JSON, others as YAML. A run's
            `config.json` (with `identity` and `config` keys) gives its `config`.
        parser: the command line's parser, whose flags say which settings exist
            and which values each takes.
        nullable: settings whose default is None, which a file may set to null.

    Returns:
        `{setting: value}`, values converted as the flag converts them; the
        command line's own settings (`COMMAND_LINE_ONLY`) are left out, with
        a line on stderr saying so.
    """
    settings = _load(path)
    if isinstance(settings.get("config"), dict) and "identity" in settings:
        settings = settings["config"]  # a run's config.json: its resolved options
    ignored = [key for key in COMMAND_LINE_ONLY if key in settings]
    if ignored:
        print(f"train: {path}: ignoring {', '.join(ignored)}: where a run reads and "
              "writes comes from the command line (--records, --output_dir, --overwrite)",
              file=sys.stderr, flush=True)
    actions = setting_actions(parser)
    checked = {}
    for key, value in settings.items():
        if key in COMMAND_LINE_ONLY:
            continue
        if key not in actions:
            close = difflib.get_close_matches(str(key), list(actions), n=1)
            hint = (f"did you mean {close[0]}?" if close else
                    f"settings are the flags of {parser.prog} --help, without --")
            raise ConfigFileError(f"{path}: unknown setting {key!r}; {hint}")
        checked[key] = _check_value(path, key, value, actions[key], key in nullable)
    return checked


def dump_settings(config, parser, header=None):
    """The settings of a resolved config as YAML that `read_settings` reads back the same.

    Args:
        config: a resolved config; its `COMMAND_LINE_ONLY` keys are left out.
        parser: the command line's parser: settings come in `--help`'s order.
        header: a comment put first, one `# ` line per line. Defaults to none.
    """
    actions = setting_actions(parser)
    # As the flag gives it: a preset's `warmup_epochs=1` prints as the 1.0 read back.
    settings = {key: actions[key].type(config[key])
                if actions[key].type is float and _is_number(config[key]) else config[key]
                for key in actions if key in config}
    text = yaml.safe_dump(settings, sort_keys=False, default_flow_style=False)
    comment = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    return comment + text


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _load(path):
    if not os.path.isfile(path):
        raise ConfigFileError(f"--config {path}: no such file")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        settings = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ConfigFileError(f"{path} is not valid JSON ({error})") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f"line {where.line + 1}: " if where else ""
        raise ConfigFileError(f"{path} is not valid YAML ({at}"
                              f"{getattr(error, 'problem', None) or error})") from None
    if settings is None:
        return {}  # an empty file sets nothing
    if not isinstance(settings, dict):
        raise ConfigFileError(f"{path} must hold settings as `name: value` lines (a "
                              f"mapping), not a {type(settings).__name__}")
    return settings


def _check_value(path, key, value, action, nullable):
    """The value as the flag would take it, or a `ConfigFileError` naming file and key."""
    def refuse(expected):
        raise ConfigFileError(f"{path}: {key} must be {expected} (as --{key} takes), "
                              f"not {value!r}")

    if value is None:
        if nullable:
            return None
        refuse("set" if action.nargs == 0 else "given a value")
    if action.nargs == 0:  # a flag without a value (--jit_compile, --[no-]flip)
        if not isinstance(value, bool):
            refuse("true or false")
        return value
    if action.type is None:  # a string: a path, a split, a name
        if not isinstance(value, str):
            refuse("a string")
        typed = value
    else:
        # What the flag would take from the same text: YAML reads 1e-4 as a
        # string, and a command line gives every number as one.
        kind = "a whole number" if action.type is int else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            refuse(kind)
        try:
            typed = action.type(str(value))
        except ValueError:
            refuse(kind)
    if action.choices is not None and typed not in action.choices:
        refuse("one of " + ", ".join(map(str, action.choices)))
    return typed
