"""Run every task of a training config: prepare the data, train, hand back the results.

    results = train_lib.run(config, prepare_config)   # {task: TaskResult}

The trainer itself lives in `wsnn.training` (`trainer.Trainer` assembles
distribution, steps, state, selection, the loop with its hooks, and
outputs). This module holds what spans tasks: the workdir's lock and
cleaning, the prepared data (made once, shared by the workers), and the
closing table.
"""

import contextlib
import dataclasses
import os
import shutil
import time

from wsnn import flags_lib, io_utils
from wsnn.data import dataset as dataset_lib
from wsnn.data import preparation
from wsnn.training import distribute, outputs
from wsnn.training.trainer import Trainer

format_table = outputs.format_table


def load_or_prepare(prepare_config, chief=True, timeout_s=3600):
    """The prepared dataset in `<workdir>/prepared`, made if missing or stale.

    Stale: prepared with other settings (`preparation.settings`: paths
    resolved, the workdir itself not a setting) or from a source that changed
    since (`preparation.source_fingerprint`). Other workers than the chief
    never prepare: they wait up to `timeout_s` for the chief to write it (the
    workdir must be shared by all workers).
    """
    directory = os.path.join(prepare_config.workdir, "prepared")
    manifest = os.path.join(directory, "manifest.json")
    waited, started = False, time.monotonic()
    while True:
        if os.path.isfile(manifest):
            dataset = dataset_lib.load(directory)
            if dataset.info.get("prepare_settings") != preparation.settings(prepare_config):
                stale = "data settings changed"
            elif dataset.info.get("source_fingerprint") != preparation.source_fingerprint(prepare_config):
                stale = "the source files changed"
            else:
                return dataset
            if chief:
                print(f"{stale} since {directory} was written: preparing again", flush=True)
        if chief:
            dataset, timings = preparation.prepare(prepare_config)
            print(preparation.format_report(dataset, timings, {}), flush=True)
            return dataset
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"waited {timeout_s} s for the chief to prepare {directory}; is the workdir "
                               "shared by all workers, and did the chief fail?")
        if not waited:
            print(f"waiting for the chief to prepare {directory}", flush=True)
            waited = True
        time.sleep(1)


def train_task(config, dataset, task, strategy, prepare_config=None, flag_values=None, hooks=()):
    """Trains (or resumes, or finds finished) one task.

    A task that has not finished records its config first (config.json,
    flags.txt, prepare_config.json); a finished one keeps the config that
    produced its outputs.

    Returns:
      its `TaskResult` (None on a worker other than the chief).
    """
    trainer = Trainer(config, dataset, task, strategy, hooks=hooks)
    if trainer.chief and not os.path.isfile(os.path.join(trainer.dir, outputs.METRICS)):
        flags_lib.write_config(config, trainer.dir, flag_values)
        if prepare_config is not None:
            io_utils.write_json(os.path.join(trainer.dir, "prepare_config.json"),
                                dataclasses.asdict(prepare_config))
    return trainer.run()


def run(config, prepare_config, flag_values=None):
    """Prepares the data and trains every task of `config`.

    Returns:
      {task: TaskResult}; under --strategy=multi_worker, only the chief has
      them (the other workers' values are None).
    """
    runtime = config.runtime
    strategy = distribute.make_strategy(runtime.num_devices, runtime.strategy)
    chief, role = distribute.worker_role(strategy)
    print(f"{strategy.num_replicas_in_sync} replica(s) in sync; this process ({role}): "
          f"{', '.join(d for d in strategy.extended.worker_devices)}", flush=True)
    task = config.data.task
    tasks = ("annotation", "refinement") if task == "both" else (task,)
    # The chief holds the workdir (the other workers write only into scratch directories).
    with io_utils.workdir_lock(runtime.workdir) if chief else contextlib.nullcontext():
        if chief:
            _clean_workdir(config, tasks)
        dataset = load_or_prepare(prepare_config, chief)
        return {task: train_task(config, dataset, task, strategy, prepare_config, flag_values) for task in tasks}


def _clean_workdir(config, tasks):
    """Under the workdir's lock: --overwrite removes the tasks' directories and TensorBoard logs;
    temp files and directories that killed runs left are removed."""
    workdir = config.runtime.workdir
    for task in tasks:
        if config.runtime.overwrite:
            for path in (os.path.join(workdir, task), os.path.join(workdir, "tensorboard", task)):
                if os.path.isdir(path):
                    print(f"--overwrite: removing {path}", flush=True)
                    shutil.rmtree(path)
    export_root = config.output.export_dir or None
    directories = [workdir]
    for task in tasks:
        task_dir = os.path.join(workdir, task)
        export_dir = os.path.join(export_root, task) if export_root else os.path.join(task_dir, "export")
        directories += [task_dir, export_dir]
    for directory in directories:
        for name in io_utils.remove_stale_temps(directory):
            print(f"removed {os.path.join(directory, name)} (left by a killed run)", flush=True)
