"""The whole benchmark: every seed's rows of both protocols, the searches and the reports.

    results = runner.run(config, prepare_config, bench)   # also written to results.json

Under `--strategy=multi_worker` every worker runs the same command on a
shared workdir: all of them train every network, the chief alone scores the
rows and writes the reports.
"""

import contextlib
import dataclasses
import os
import time

from wsnn import io_utils
from wsnn.benchmark import grid, methods, networks, report

TASKS = ("annotation", "refinement")


def run_seed(config, bench, dataset, seed, strategy, tag_similarity_fn, variant=None, pretrained=None,
             earlier=None):
    """All methods of both protocols for one seed; returns {protocol: {method: result}} ({} on a worker
    other than the chief).

    `variant`: the settings of the "Ours (bce)" row (from the grid search), or None. `pretrained`:
    `networks.pretrained_features` of every image, or None. With `bench.baselines_only` no network is
    trained: the split is the trainer's (`wsnn.training.task_data.TaskData`), and the baselines use
    `pretrained`. `earlier`: this seed's rows of an earlier run (`report.earlier_rows`), for the cost
    of reused tasks."""
    from wsnn.training.task_data import TaskData

    workdir = os.path.join(config.runtime.workdir, f"seed{seed}")
    config = config.replace(seed=seed, workdir=workdir, save_stage1_features=True, task="both")
    results = {}
    for task in TASKS:
        earlier_rows = (earlier or {}).get(task, {})
        if bench.baselines_only:
            data = TaskData(dataset, task, config.data, seed)  # the trainer's split; no image is read
            split, rows, phi0 = (data.train_idx, data.valid_idx, data.eval_idx), {}, None
        else:
            ours, rows = networks.network_rows(config, dataset, task, strategy, variant, bench.convention,
                                               earlier_rows)
            if task == "annotation":
                name = "Multi-CNN (true labels)"
                rows[name] = networks.true_labels_row(config, dataset, ours and ours.eval_idx, strategy,
                                                      bench.convention, earlier_rows.get(name))
            if ours is None:  # a worker other than the chief: it trained alongside, the chief scores
                continue
            split, phi0 = (ours.train_idx, ours.valid_idx, ours.eval_idx), ours.phi0
            if task == "refinement":
                results["neighbour_snapshots"] = ours.neighbour_snapshots
        train_idx, valid_idx, eval_idx = split
        visual = phi0 if pretrained is None else {"train": pretrained[train_idx], "eval": pretrained[eval_idx],
                                                  "valid": pretrained[valid_idx]}
        rows.update(methods.baseline_rows(bench, dataset, task, split, visual, phi0,
                                          lambda train_set: tag_similarity_fn(train_set, config), seed))
        results[task] = rows
    return results


def run(config, prepare_config, bench):
    """The whole benchmark; returns the results dict written to results.json (None on a worker other
    than the chief)."""
    from wsnn import similarity
    from wsnn.data.preparation import load_or_prepare
    from wsnn.training import distribute

    started = time.perf_counter()
    runtime = config.runtime
    strategy = distribute.make_strategy(runtime.num_devices, runtime.strategy)
    chief, _ = distribute.worker_role(strategy)
    # The chief holds the workdir (the other workers write only into scratch directories).
    with io_utils.workdir_lock(runtime.workdir) if chief else contextlib.nullcontext():
        dataset = load_or_prepare(prepare_config, chief)
        if dataset.labels is None:
            raise ValueError("the benchmark needs ground-truth labels; this dataset has none")
        config = config.replace(export=False)  # no run of the benchmark is served
        results = {"config": config.flat(), "benchmark": dataclasses.asdict(bench)}
        variant = None
        if bench.grid_search:
            results["grid_search"] = grid.grid_search(config, bench, dataset, strategy)
            chosen = results["grid_search"]["chosen"]
            if "l1" in chosen:
                config = config.replace(**chosen["l1"])
            variant = chosen.get("bce")
            print(f"grid search chose {chosen}", flush=True)

        def tag_similarity_of(train_set, cfg):
            sem = cfg.semantics
            return similarity.tag_similarity(train_set, sem.alpha, sem.similarity_measure, sem.ic_file or None,
                                            cache_dir=os.path.join(runtime.workdir, "prepared", "cache"))[0]

        pretrained = networks.pretrained_features(config, dataset)
        if bench.baselines_only and pretrained is None:
            raise ValueError("--baselines_only needs the pretrained features of --weights (it is 'none')")
        earlier = report.earlier_rows(runtime.workdir, bench) if chief else {}
        per_seed = [run_seed(config, bench, dataset, seed, strategy, tag_similarity_of, variant, pretrained,
                             earlier.get(seed)) for seed in range(bench.seeds)]
        ablation = grid.ablation(config, dataset, strategy, variant) if bench.ablation else None
        if not chief:
            return None
        results["per_seed"] = per_seed
        results["table"] = report.aggregate(per_seed)
        if ablation is not None:
            results["ablation"] = ablation
        results["wall_seconds"] = time.perf_counter() - started
        out_dir = report.output_dir(runtime.workdir, bench)
        report.write(results, dataset, bench, out_dir)
        report.pictures(config, dataset, per_seed, out_dir)
    return results
