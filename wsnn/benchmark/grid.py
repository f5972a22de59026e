"""The benchmark's searches: the grid search of ours' weights and the ablation of its constraints.

`grid_search` chooses lambda1, lambda2, alpha and the stage-2 learning rate,
per L_err, coarse to fine (`search_plan`, `choose`) on the validation split
of the first seed's annotation training images; `ablation` trains each
constraint alone (`ablation_variants`).
"""

import os

from wsnn import config as config_lib
from wsnn.benchmark import report
from wsnn.benchmark.config import floats
from wsnn.benchmark.networks import train

GRID_KEYS = ("lambda1", "lambda2", "alpha", "stage2_learning_rate", "user_error")


def choose(trials):
    """The trial with the best validation mAP (the first of equals)."""
    return max(trials, key=lambda t: t["validation"]["mAP"])


def search_plan(lambda1s, lambda2s, alphas, rates):
    """The coarse-to-fine plan of `grid_search`: a list of trial settings (lambda2 x rate at
    lambda1 = 0), then two callables that take the best settings so far and return the next trials
    (lambda1, then alpha when the best lambda1 is not 0)."""
    alpha0 = 1.0 if 1.0 in alphas else alphas[0]
    yield [dict(lambda1=0.0, lambda2=l2, alpha=alpha0, stage2_learning_rate=r) for l2 in lambda2s for r in rates]
    yield lambda best: [dict(best, lambda1=l1) for l1 in lambda1s if l1 != best["lambda1"]]
    yield lambda best: ([dict(best, alpha=a) for a in alphas if a != best["alpha"]] if best["lambda1"] > 0
                        else [])


def grid_search(config, bench, dataset, strategy):
    """Chooses lambda1, lambda2, alpha and the stage-2 learning rate, per L_err, on the validation split
    of the first seed's annotation training images (the evaluated images' labels are never read: each
    trial is scored by `Trainer.history`'s validation mAP at its best stage-2 epoch)."""
    grid_dir = os.path.join(config.runtime.workdir, "grid")
    base = config.replace(task="annotation", stage2_epochs=bench.grid_stage2_epochs, eval_max_images=0,
                          workdir=grid_dir)
    phi0_dir = os.path.join(grid_dir, "phi0")
    train(base.replace(stage2_epochs=0, workdir=phi0_dir), dataset, "annotation", strategy)  # one phi_0 for all
    schedule = config.schedule
    rates = floats(bench.grid_learning_rate) or [schedule.stage2_learning_rate or schedule.learning_rate]
    out = {"trials": [], "chosen": {}, "searched_on": "validation split of seed 0's annotation training images",
           "validation_images": None}
    for user_error in config_lib.items(bench.grid_user_error):
        trials, best = [], None
        for plan in search_plan(floats(bench.grid_lambda1), floats(bench.grid_lambda2),
                                floats(bench.grid_alpha), rates):
            for values in (plan if isinstance(plan, list) else plan({k: best[k] for k in GRID_KEYS[:4]})):
                values = dict(values, user_error=user_error)
                name = "_".join(f"{k}={v:g}" if isinstance(v, float) else f"{v}" for k, v in values.items())
                trial_config = base.replace(**values, warm_start_from=phi0_dir, workdir=os.path.join(grid_dir, name))
                result, usage = train(trial_config, dataset, "annotation", strategy)
                stage2 = [r for r in result.history if r["stage"] == 2]
                kept = max(stage2, key=lambda r: r["validation"]["mAP"])
                trial = dict(values, validation=kept["validation"], stage2_epoch=kept["epoch"],
                             validation_per_epoch=[r["validation"]["mAP"] for r in stage2],
                             diagnostics=[r["diagnostics"] for r in stage2], seconds=usage.seconds)
                trials.append(trial)
                out["validation_images"] = result.summary["validation_images"]
                print(f"grid {name}: validation mAP {kept['validation']['mAP']:.4f} "
                      f"(stage-2 epoch {kept['epoch']})", flush=True)
            best = choose(trials)
        out["chosen"][user_error] = {k: best[k] for k in GRID_KEYS}
        out["trials"] += trials
    report.hparams(out["trials"], os.path.join(config.runtime.workdir, "benchmark", "hparams"), GRID_KEYS)
    return out


def ablation_variants(variant=None):
    """{name: config changes}: each constraint alone, and the variant's data term alone."""
    variants = {"L_vis only": dict(lambda_vis=1.0, lambda1=0.0, lambda2=0.0),
                "L_sem only": dict(lambda_vis=0.0, lambda2=0.0),
                "L_err only": dict(lambda_vis=0.0, lambda1=0.0)}
    if variant:
        variants["L_err (bce) only"] = dict(variant, lambda_vis=0.0, lambda1=0.0)
    return variants


def ablation(config, dataset, strategy, variant=None):
    """Each constraint alone (first seed, stage 2 from its phi_0), and the variant's data term alone:
    the four metrics per protocol ({} on a worker other than the chief, which trains alongside)."""
    out = {}
    for name, change in ablation_variants(variant).items():
        workdir = config.runtime.workdir
        variant_config = config.replace(task="both", seed=0, **change,
                                        workdir=os.path.join(workdir, "ablation", name.replace(" ", "_")),
                                        warm_start_from=os.path.join(workdir, "seed0"))
        for task in ("annotation", "refinement"):
            result = train(variant_config, dataset, task, strategy)[0]
            if result is not None:
                summary = result.summary
                out.setdefault(name, {})[task] = dict(summary["metrics"]["Ours"],
                                                      stage2_epoch=summary["selection"]["stage2_epoch"])
    return out
