"""Small validators, one of each.

`at_least_one` and `in_unit_interval` check command-line options: each takes
options as keyword arguments named like their flags and raises
ValueError("--name=value: must be ...") for the first bad one, in argument
order. `positive_int` checks a function argument.
"""


def at_least_one(**values):
    """Checks that every value is >= 1 (counts and sizes).

    Raises:
      ValueError: "--name=value: must be >= 1".
    """
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"--{name}={value}: must be >= 1")


def in_unit_interval(**values):
    """Checks that every value is in [0, 1] (NaN is not).

    Raises:
      ValueError: "--name=value: must be in [0, 1]".
    """
    for name, value in values.items():
        if not 0 <= value <= 1:
            raise ValueError(f"--{name}={value}: must be in [0, 1]")


def positive_int(value, name):
    """`value` as an int when it is a whole number >= 1 (not a bool); for function arguments.

    Raises:
      ValueError: "<name> must be a positive integer, got <value>".
    """
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
