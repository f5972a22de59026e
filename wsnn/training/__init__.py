"""The trainer, in parts: distribution, steps, state, selection, the loop and its hooks, outputs.

`trainer.Trainer` assembles the parts for one task; `wsnn.train_lib.run`
runs every task of a config and returns their `outputs.TaskResult`s.
"""
