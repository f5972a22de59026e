"""Run every task of a training config: prepare the data, train, hand back the results.

    results = runner.run(config, prepare_config)   # {task: TaskResult}

`trainer.Trainer` assembles one task (distribution, steps, state,
selection, the loop with its hooks, and outputs). This module holds what
spans tasks: the workdir's lock and cleaning, the prepared data (made once
by the chief, `wsnn.data.preparation.load_or_prepare`), and the closing
table.
"""

import contextlib
import dataclasses
import os
import shutil

from wsnn import flags_lib, io_utils
from wsnn.data import preparation
from wsnn.training import distribute, outputs
from wsnn.training.layout import TaskLayout
from wsnn.training.trainer import Trainer

format_table = outputs.format_table


def train_task(config, dataset, task, strategy, prepare_config=None, flag_values=None, hooks=()):
    """Trains (or resumes, or finds finished) one task.

    A task that has not finished records its config first (config.json,
    flags.txt, prepare_config.json); a finished one keeps the config that
    produced its outputs.

    Returns:
      its `TaskResult` (None on a worker other than the chief).
    """
    trainer = Trainer(config, dataset, task, strategy, hooks=hooks)
    if trainer.chief and not trainer.layout.finished():
        flags_lib.write_config(config, trainer.layout, flag_values)
        if prepare_config is not None:
            io_utils.write_json(trainer.layout.prepare_config, dataclasses.asdict(prepare_config))
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
        dataset = preparation.load_or_prepare(prepare_config, chief)
        return {task: train_task(config, dataset, task, strategy, prepare_config, flag_values) for task in tasks}


def _clean_workdir(config, tasks):
    """Under the workdir's lock: --overwrite removes the tasks' directories and TensorBoard logs;
    temp files and directories that killed runs left are removed."""
    workdir = config.runtime.workdir
    for task in tasks:
        if config.runtime.overwrite:
            for path in (TaskLayout.of(workdir, task).dir, os.path.join(workdir, "tensorboard", task)):
                if os.path.isdir(path):
                    print(f"--overwrite: removing {path}", flush=True)
                    shutil.rmtree(path)
    directories = [workdir]
    for task in tasks:
        layout = TaskLayout.of(workdir, task)
        directories += [layout.dir, layout.export_dir(config.output.export_dir)]
    for directory in directories:
        for name in io_utils.remove_stale_temps(directory):
            print(f"removed {os.path.join(directory, name)} (left by a killed run)", flush=True)
