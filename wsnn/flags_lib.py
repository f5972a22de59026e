"""absl flags made from configs, at the command-line edge only.

`define_flags` defines one flag per leaf field of a config dataclass (for
`TrainConfig`, per field of each of its groups), registered under a group
name so that `--helpfull` lists them by group; `from_flags` builds the config
from the parsed flags once. A field's `choices` and `bounds` are shown in its
help; they are checked by the config itself, so that a bad value gets the
same one-line "config error" as every other check (and exit status 2) rather
than absl's parse error.
"""

import dataclasses
import os

from absl import flags

from wsnn import config as config_lib


def _leaves(cls):
    """(group name or None, field) of every leaf of config class `cls`."""
    if cls is config_lib.TrainConfig:
        return [(group, f) for group, group_cls in config_lib.GROUPS.items()
                for f in dataclasses.fields(group_cls)]
    return [(None, f) for f in dataclasses.fields(cls)]


_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}
_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def define_flags(cls, group_prefix, skip=(), flag_values=flags.FLAGS):
    """Defines one absl flag per leaf field of config class `cls` (except `skip` and flags already
    defined), listed in `--helpfull` under "`group_prefix`" or "`group_prefix`.<group>".

    Raises:
      TypeError: a field whose type has no flag type.
    """
    for group, f in _leaves(cls):
        if f.name in skip or f.name in flag_values:
            continue
        kind = _TYPES.get(f.type, f.type)
        if kind not in _DEFINE:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag type for {f.type!r}")
        help_text = f.metadata.get("help", f.name)
        if f.metadata.get("choices"):
            help_text += f" One of: {', '.join(str(c) for c in f.metadata['choices'])}."
        if f.metadata.get("bounds"):
            help_text += f" Range: {f.metadata['bounds']}."
        _DEFINE[kind](f.name, f.default, help_text, flag_values=flag_values,
                      module_name=f"{group_prefix}.{group}" if group else group_prefix)


def from_flags(cls, flag_values=flags.FLAGS, **overrides):
    """Builds config class `cls` from parsed flags; `overrides` (flat names) win over flags.

    Raises:
      ValueError: "--name=value: why" for the first bad value.
    """
    values = {f.name: flag_values[f.name].value for _, f in _leaves(cls) if f.name in flag_values}
    values.update(overrides)
    if cls is config_lib.TrainConfig:
        return cls.make(**values)
    return cls(**values)


def write_config(config, directory, flag_values=None):
    """Records the resolved config (config.json) and flags (flags.txt) in `directory`."""
    from wsnn import io_utils

    io_utils.write_json(os.path.join(directory, "config.json"), dataclasses.asdict(config))
    if flag_values is not None:
        io_utils.write_text(os.path.join(directory, "flags.txt"), flag_values.flags_into_string())
