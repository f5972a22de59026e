"""The distribution strategy, this process's role, and per-replica shares of a global batch.

Loss scaling happens in exactly one place: Keras (>= 3.8) divides each
`sum_over_batch_size` loss by `num_replicas_in_sync` when a strategy is
active, and the optimiser sums the replicas' gradients. The steps
(`wsnn.training.steps`) therefore neither divide nor average again; the
replicas' losses are summed for reporting (`summed`).
"""

import os

import tensorflow as tf


def make_strategy(num_devices, strategy="mirrored"):
    """The distribution strategy of a run.

    mirrored: MirroredStrategy over all GPUs, or over `num_devices` (logical)
    CPU devices. multi_worker: MultiWorkerMirroredStrategy over the cluster
    that the TF_CONFIG environment variable describes, each worker using its
    own GPUs (or its CPU).

    Logical CPU devices can only be made before TensorFlow initialises; the
    entry point calls this first.

    Raises:
      RuntimeError: multi_worker without TF_CONFIG, or too few CPU devices.
    """
    if strategy == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise RuntimeError("--strategy=multi_worker: set TF_CONFIG to the cluster and this worker's task, "
                               'e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                               '"task": {"type": "worker", "index": 0}}')
        return tf.distribute.MultiWorkerMirroredStrategy()
    # list_physical_devices does not initialise the runtime; list_logical_devices does.
    if tf.config.list_physical_devices("GPU"):
        names = [d.name for d in tf.config.list_logical_devices("GPU")][:num_devices or None]
        return tf.distribute.MirroredStrategy(names)
    wanted = max(num_devices, 1)
    if wanted > 1:
        try:
            tf.config.set_logical_device_configuration(
                tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * wanted)
        except RuntimeError:
            pass  # already initialised (e.g. by a test harness); checked below
    if len(tf.config.list_logical_devices("CPU")) < wanted:
        raise RuntimeError(f"--num_devices={num_devices}: TensorFlow was initialised with "
                           f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s) before the "
                           "strategy was made")
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")][:wanted]
    return tf.distribute.MirroredStrategy(cpus)


def worker_role(strategy):
    """(is this process the chief, its name) under `strategy`; a single process is the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, "chief"
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, f"{task_type} {task_id}"


def distribute(strategy, *arrays):
    """Splits a global batch into contiguous per-replica shares (whole groups when the batch size is
    a multiple of group size x replicas)."""
    replicas = strategy.num_replicas_in_sync
    share = len(arrays[0]) // replicas

    def value_fn(context):
        i = context.replica_id_in_sync_group
        return tuple(tf.constant(a[i * share:(i + 1) * share]) for a in arrays)
    return strategy.experimental_distribute_values_from_function(value_fn)


def summed(strategy, per_replica):
    """{name: the replicas' values summed} (Keras already divided each replica's loss by the replica
    count)."""
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}
