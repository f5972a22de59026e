"""The trainer, in parts: distribution, steps, state, selection, the loop and its hooks, outputs.

`trainer.Trainer` assembles the parts for one task; `runner.run` runs every
task of a config and returns their `outputs.TaskResult`s. `layout.TaskLayout`
names a task directory's files; `task_data.TaskData` is a task's split and
image sources.
"""
