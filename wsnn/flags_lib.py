"""absl flags made from configs, at the command-line edge only.

`define_flags` defines one flag per leaf field of a config tree (a dataclass
whose dataclass-typed fields are groups, walked generically: a command's
root such as `wsnn.train.TrainRun`, or one config), registered under its
group's path so that `--helpfull` lists them by group; `from_flags` builds the
tree from the parsed flags once. Flags stay flat (`--lambda1`), so a leaf
name used twice in one tree, or a flag already defined, is an error when the
flags are defined. A field's `choices` and `bounds` are shown in its
help; they are checked by the config itself, so that a bad value gets the
same one-line "config error" as every other check (and exit status 2) rather
than absl's parse error.
"""

import dataclasses

from absl import flags

from wsnn import config as config_lib

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}
_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def define_flags(cls, group_prefix="", flag_values=flags.FLAGS):
    """Defines one absl flag per leaf of config tree `cls` (`config.flag_leaves`: nested dataclasses,
    walked generically), listed in `--helpfull` under its group's path ("train.data"), after
    `group_prefix` where one is given.

    Raises:
      ValueError: two leaves of one name in the tree, or a flag of a leaf's name already defined (two
        configs must not share one flag by accident).
      TypeError: a field whose type has no flag type.
    """
    for path, f in config_lib.flag_leaves(cls):
        if f.name in flag_values:
            raise ValueError(f"{cls.__name__}.{'.'.join(path + (f.name,))}: a flag --{f.name} is already defined "
                             f"(by {flag_values.find_module_defining_flag(f.name)})")
        kind = _TYPES.get(f.type, f.type)
        if kind not in _DEFINE:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag type for {f.type!r}")
        help_text = f.metadata.get("help", f.name)
        if f.metadata.get("choices"):
            help_text += f" One of: {', '.join(str(c) for c in f.metadata['choices'])}."
        if f.metadata.get("bounds"):
            help_text += f" Range: {f.metadata['bounds']}."
        _DEFINE[kind](f.name, f.default, help_text, flag_values=flag_values,
                      module_name=".".join(p for p in (group_prefix, *path) if p))


def from_flags(cls, flag_values=flags.FLAGS, **overrides):
    """Builds config tree `cls` from parsed flags (`config.build`); `overrides` (flat names) win over flags.

    Raises:
      ValueError: "--name=value: why" for the first bad value.
    """
    values = {f.name: flag_values[f.name].value for _, f in config_lib.flag_leaves(cls) if f.name in flag_values}
    values.update(overrides)
    return config_lib.build(cls, values)


def write_config(config, layout, flag_values=None):
    """Records the resolved config (config.json) and flags (flags.txt) in a task directory (its
    `wsnn.training.layout.TaskLayout`)."""
    from wsnn import io_utils

    io_utils.write_json(layout.config, dataclasses.asdict(config))
    if flag_values is not None:
        io_utils.write_text(layout.flags, flag_values.flags_into_string())
