"""Checks and reshapes of a loss's batch shared by the losses of `wsnn.losses`.

Batch layout (Algorithm 1): a batch of s rows is s/m consecutive groups of
m = ``group_size`` rows; row 0 of each group is the anchor image i_j and rows
1..m-1 are its selected neighbours z_e.
"""

import tensorflow as tf


def check_group_size(group_size):
    """Validate m: a group needs an anchor plus at least one neighbour."""
    if int(group_size) != group_size or group_size < 2:
        raise ValueError(f"group_size must be an integer >= 2 (anchor plus neighbours), got {group_size!r}")
    return int(group_size)


def check_matrix(x, what):
    """Require a statically rank-2 tensor (s x something)."""
    if x.shape.rank is not None and x.shape.rank != 2:
        raise ValueError(f"{what} must be 2-D (batch x columns), got shape {x.shape}")


def check_same_rows(a, b, what_a, what_b):
    """Require equal static batch sizes where both are known."""
    if a.shape[0] is not None and b.shape[0] is not None and a.shape[0] != b.shape[0]:
        raise ValueError(f"{what_a} has {a.shape[0]} rows but {what_b} has {b.shape[0]}")


def to_groups(x, group_size, what):
    """Reshape s x k to (s/m) x m x k, refusing s that is not a multiple of m.

    Static batch sizes are checked at trace time (ValueError); dynamic ones at
    run time (tf.errors.InvalidArgumentError from tf.debugging.assert_equal).
    """
    rows = x.shape[0]
    if rows is not None:
        if rows % group_size:
            raise ValueError(f"{what} has {rows} rows, not a multiple of group_size={group_size}")
    else:
        check = tf.debugging.assert_equal(
            tf.shape(x)[0] % group_size, 0,
            message=f"{what}: batch size must be a multiple of group_size={group_size}")
        with tf.control_dependencies([check]):
            x = tf.identity(x)
    return tf.reshape(x, [-1, group_size, tf.shape(x)[-1]])
