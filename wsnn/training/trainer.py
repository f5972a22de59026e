"""One task's training (the paper's Algorithm 2), assembled from the parts of `wsnn.training`.

    stage 1  the tag head starts from a linear probe on the starting
             backbone's frozen features (--head_init); then the multi-label
             logistic loss on the user tags G (summed over tags) fine-tunes
             the whole network, scored on the validation split every
             --validate_every_steps steps; then phi_0's
             features of all training images give each image its M nearest
             candidates Z (`wsnn.search`: --candidate_search exact,
             pca or ivf);
    stage 2  batches from Algorithm 1 (each anchor plus its m-1 nearest
             candidates under the current weights; or, with
             --neighbour_mode=fast, nearest in an embedding bank refreshed
             every --bank_refresh_steps) and
             L_final = L_vis + lambda1 L_sem + lambda2 L_err.

Both stages run `loop.run_stage`: an inner `tf.function` step run by
`strategy.run` under `tf.distribute.MirroredStrategy` (or
`MultiWorkerMirroredStrategy`: only the chief writes files) and an outer
Python loop whose periodic actions are hooks. The model, both optimisers and
the checkpoint are built under `strategy.scope()`. Resume order: see
`wsnn.training.state`. Files that stage 1 leaves for stage 2 (candidates,
phi_0's weights and metrics) are written before the checkpoint that moves
the run into stage 2.
"""

import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from wsnn import checks, diagnostics, io_utils, linear_probe, losses, models, neighbours, search, similarity
from wsnn import serving
from wsnn.data import dataset as dataset_lib
from wsnn.training import distribute, hooks as hooks_lib, loop, outputs, selection as selection_lib
from wsnn.training import inputs, schedules, state as state_lib
from wsnn.training.layout import TaskLayout
from wsnn.training.steps import Steps
from wsnn.training.task_data import TaskData


class Trainer:
    """One task's run: the split, the parts (steps, state, selection), both stages and outputs.

    Its hooks and outputs see the run through `run_context` (a `loop.RunContext`: config, layout,
    data, steps, state, selection, writer, log, records), never the trainer.

    Args:
      config: a `wsnn.config.TrainConfig`.
      dataset: the prepared `TaggedImageSet`.
      task: "annotation" or "refinement".
      strategy: the distribution strategy (`distribute.make_strategy`).
      hooks: extra `loop.Hook`s, run after the built-in ones in both stages.
    """

    def __init__(self, config, dataset, task, strategy, hooks=()):
        self.config, self.dataset, self.task, self.strategy = config, dataset, task, strategy
        self.extra_hooks = list(hooks)
        self.layout = TaskLayout.of(config.runtime.workdir, task)
        # Multi-worker: every worker computes and saves alike, but only the chief's files land in
        # the (shared) workdir; the others save (`own`: checkpoints, best/, phi0/) into a scratch
        # directory removed at the end.
        self.chief, self.role = distribute.worker_role(strategy)
        if self.chief:
            os.makedirs(self.layout.dir, exist_ok=True)
        self.scratch = None if self.chief else tempfile.mkdtemp(prefix="wsnn-worker-")
        self.own = self.layout if self.chief else TaskLayout(self.scratch)
        batch_size, group_size = config.schedule.batch_size, config.neighbours.group_size
        checks.batch_shape(batch_size, group_size, replicas=strategy.num_replicas_in_sync)
        cache_dir = os.path.join(config.runtime.workdir, "prepared", "cache")
        self.data = data = TaskData(dataset, task, config.data, config.runtime.seed, cache_dir, log=self.log)
        n = len(data.train_idx)
        checks.training_data(batch_size, n, dataset.num_tags, config.model.backbone, config.data.image_size,
                             data_image_size=(min(dataset.image_array.shape[1:3])
                                              if dataset.image_array is not None else None),
                             task=task)
        self.num_candidates = min(config.neighbours.num_candidates, n - 1)
        if group_size >= self.num_candidates:
            raise ValueError(f"--group_size={group_size}: needs more candidates than the "
                             f"{self.num_candidates} that {n} training images allow (m < M < N)")
        if self.num_candidates < config.neighbours.num_candidates:
            self.log(f"num_candidates capped at {self.num_candidates} (N = {n})")
        # A set of image files is decoded once, at the input size, for every read of the run.
        self.input_shape = data.train_source.get([0]).shape[1:]
        sched = config.schedule
        # The loop's unit ("epoch", between validation checks): stage 1 every image once or
        # --validate_every_steps steps; stage 2 (Algorithm 1) every image an anchor once, s/m per step.
        data_epoch = -(-n // batch_size)
        self.steps_per_epoch = {1: sched.validate_every_steps or data_epoch,
                                2: -(-n // (batch_size // group_size))}
        stage1_steps = sched.stage1_steps or sched.stage1_epochs * data_epoch
        self.epochs = {1: -(-stage1_steps // self.steps_per_epoch[1]), 2: sched.stage2_epochs}

        sem, loss = config.semantics, config.loss
        tag_similarity, _ = similarity.tag_similarity(
            data.train_set, sem.alpha, sem.similarity_measure, sem.ic_file or None, cache_dir=cache_dir)
        with strategy.scope():
            keras.utils.set_random_seed(config.runtime.seed)
            self.model = models.build_model(config.model.backbone, dataset.num_tags, self.input_shape,
                                            config.model.weights,
                                            freeze_batch_norm=config.model.batch_norm == "frozen")
            decay_steps = {1: sched.lr_decay_epochs * data_epoch, 2: sched.lr_decay_epochs * self.steps_per_epoch[2]}
            self.optimizers = [keras.optimizers.SGD(
                schedules.make(sched.lr_schedule, rate, self.epochs[stage] * self.steps_per_epoch[stage],
                               sched.warmup_steps if stage == 1 else 0, decay_steps[stage], sched.lr_decay_factor),
                momentum=sched.momentum)
                for stage, rate in ((1, sched.learning_rate), (2, sched.stage2_learning_rate or sched.learning_rate))]
            for optimizer in self.optimizers:
                optimizer.build(self.model.trainable_variables)
            self.logistic_loss = losses.MultiLabelLogisticLoss()
            self.final_loss = losses.WeaklySupervisedLoss(
                tag_similarity, group_size, loss.lambda1, loss.lambda2, loss.stop_gradient_through_similarity,
                lambda_vis=loss.lambda_vis, user_error=loss.user_error)
        self.state = state_lib.TrainState(self.model, self.optimizers, strategy, self.layout.checkpoints,
                                          save_dir=self.own.checkpoints, max_to_keep=3 if self.chief else 1)
        if self.chief:
            state_lib.check_identity(self.layout, data.identity)
            if not os.path.isfile(self.layout.model_facts):
                serving.write_model_facts(self.layout.model_facts, config.model.backbone, dataset.tag_names,
                                          self.input_shape, self._max_pixels())
        self.writer = (tf.summary.create_file_writer(os.path.join(config.runtime.workdir, "tensorboard", task))
                       if self.chief else tf.summary.create_noop_writer())
        self.steps = Steps(self.model, self.optimizers, self.logistic_loss, self.final_loss, strategy,
                           self.input_shape, sched.stage2_objective)
        self.batches = None  # Algorithm 1's batches (stage 2, objective ours)
        # phi_0's metrics, head start, features and evaluation tag probabilities
        # (--save_stage1_features), neighbour snapshots: on resuming, as saved.
        self.records = loop.RunRecords(
            stage1_metrics=state_lib.read_json(self.layout.stage1_metrics),
            head_init=state_lib.read_json(self.layout.head_init), phi0=outputs.read_phi0(self.layout),
            neighbour_snapshots=state_lib.read_json(self.layout.snapshots, []))
        # Per-epoch validation scores and diagnostics of both stages; the best epoch's weights of
        # the running stage are kept in best/.
        validate = (lambda: outputs.validation_scores(self.steps, data)) if data.valid_source is not None else None
        self.selection = selection_lib.Selection(validate, self.model, self.own.best, self.layout.history,
                                                 self.chief, self.writer, sched.patience, self.log)
        self.run_context = loop.RunContext(config, task, self.layout, data, self.steps, self.state, self.selection,
                                           self.writer, self.log, self.records, self.steps_per_epoch, strategy)

    def log(self, text):
        """A progress line, prefixed with the task."""
        print(f"[{self.task}] {text}", flush=True)

    def hooks(self, stage):
        """The hooks of `stage`, in the order they run, the extra ones last."""
        watch = stage == 2 and self.config.schedule.stage2_objective == "ours"
        fast = watch and self.config.neighbours.neighbour_mode == "fast"
        chosen = [hooks_lib.NaNStop(), hooks_lib.StepTimes()]
        chosen += [hooks_lib.Diagnostics(self.final_loss)] if watch else []
        chosen += [hooks_lib.Progress()]
        chosen += [hooks_lib.NeighbourImage()] if watch else []
        chosen += [hooks_lib.Checkpoint()]
        chosen += [hooks_lib.BankRefresh(self.batches)] if fast else []
        chosen += [hooks_lib.NeighbourSnapshots()] if watch and self.chief else []
        chosen += [hooks_lib.Select()]
        chosen += [hooks_lib.Evaluate()] if self.chief else []
        return chosen + self.extra_hooks

    # ----- the stages -----------------------------------------------------------------------

    def run(self):
        """Runs (or resumes) both stages and writes the task's outputs.

        Returns:
          the task's `outputs.TaskResult` (None on a worker other than the chief).
        """
        data, layout, records = self.data, self.layout, self.records
        if layout.finished():
            # metrics.json is written last: the run is finished (its data checked in __init__).
            if self.chief and not os.path.isfile(layout.evaluated):
                # Finished by an older wsnn: the final weights (the last checkpoint) give what is missing.
                self.state.checkpoint.restore(tf.train.latest_checkpoint(self.state.checkpoint_dir)).expect_partial()
                outputs.write_evaluated(layout, data, self.steps.predict(data.eval_source)
                                        if data.eval_set.labels is not None else None)
                self.log(f"wrote {os.path.basename(layout.evaluated)} (the task was finished by an older wsnn)")
            result = outputs.TaskResult.load(layout.dir)
            self.log(f"already done: outputs in {layout.dir} ({os.path.basename(layout.metrics)}, "
                     f"{os.path.basename(layout.refined_tsv)}), export "
                     f"{result.summary.get('export')}; to train again use --overwrite or another --workdir")
            return result if self.chief else None
        warm = self.config.runtime.warm_start_from
        how = self.state.resume(
            (lambda: self._warm_start(TaskLayout.of(warm, self.task))) if warm else None)
        if how == "checkpoint":
            stage, epoch, step = self.state.position()
            self.log(f"resuming from {tf.train.latest_checkpoint(self.state.checkpoint_dir)} (stage {stage}, "
                     f"epoch {epoch + 1}, step {step})")
        schedule = self.config.schedule
        if int(self.state.stage) == 1:
            if self.state.at_start_of_stage() and self.config.model.head_init == "linear_probe":
                self._init_head()
            self._run_stage(1, self._stage1_batch)
            self._finish_stage1()
        if int(self.state.stage) == 2:
            if schedule.stage2_objective == "multi_cnn":
                self._run_stage(2, self._plain_batch)
            else:
                if records.candidates is None:
                    records.candidates = np.load(layout.candidates)
                self.batches = self._neighbour_batches()
                self._run_stage(2, self._stage2_prepare, self._stage2_finish)
            self.state.move_to(3)
            self.state.save()
        digest = state_lib.weights_digest(self.model)
        self.log(f"{self.role}: final weights sha256 {digest}")
        if not self.chief:
            if self.config.output.export:
                self.export(self.own.export_dir())  # collective, as saving is
            shutil.rmtree(self.scratch, ignore_errors=True)
            return None
        return outputs.write_outputs(self.run_context, digest, self.export if self.config.output.export else None)

    def _neighbour_batches(self):
        neighbour = self.config.neighbours
        fast = neighbour.neighbour_mode == "fast"
        data, bank = self.data, None
        if fast:
            bank = np.zeros((len(data.train_idx), self.steps.embed(data.train_source.get([0])).shape[1]), np.float32)
        return neighbours.NeighbourBatches(
            data.train_source, data.user_tags, self.records.candidates, self.steps.embed,
            self.config.schedule.batch_size,
            neighbour.group_size, self.config.runtime.seed, bank=bank,
            shortlist=min(neighbour.shortlist, self.num_candidates), extrapolation=neighbour.bank_extrapolation)

    def _warm_start(self, source):
        """Starts stage 2 from another run's phi_0 (same data, split and seed): its weights,
        candidates and Multi-CNN metrics. Stage 1 does not depend on lambda1, lambda2, alpha or
        lambda_vis, so grid search and ablations need not train it again."""
        files = (source.candidates, source.stage1_metrics, state_lib.weights_index(source.phi0_weights),
                 source.history)
        missing = [os.path.relpath(f, source.dir) for f in files if not os.path.isfile(f)]
        if missing:
            raise ValueError(f"--warm_start_from: {source.dir} has no finished stage 1 ({', '.join(missing)} missing)")
        state_lib.check_same_data(source, self.data.identity)
        records = self.records
        candidates = records.candidates = np.load(source.candidates)
        if len(candidates) != len(self.data.train_idx):
            raise ValueError(f"--warm_start_from: {source.dir} has candidates for {len(candidates)} training "
                             f"images, this run has {len(self.data.train_idx)} (different data, split or seed)")
        state_lib.read_weights(self.model, source.phi0_weights)
        for name in ("candidates", "stage1_metrics", "phi0_features", "head_init"):
            if self.chief and os.path.isfile(getattr(source, name)):
                shutil.copyfile(getattr(source, name), getattr(self.layout, name))
        records.stage1_metrics = state_lib.read_json(source.stage1_metrics)
        records.head_init = state_lib.read_json(source.head_init)
        records.phi0 = outputs.read_phi0(source)
        self.selection.history = [r for r in state_lib.read_json(source.history) if r["stage"] == 1]
        self.log(f"stage 2 starts from phi_0 of {source.dir}")
        self.state.move_to(2)
        self.state.save()

    def _init_head(self):
        """Linear probing before fine-tuning: the tag head set to per-tag logistic regressions on the
        starting weights' features of the training images (`wsnn.linear_probe`; L2 strength chosen on
        validation mAP). Stage 1's epoch 0 scores it, so selection may keep it as phi_0."""
        started = time.perf_counter()
        data, valid_features, valid_score = self.data, None, None
        if data.valid_source is not None:
            valid_features = self.steps.features(data.valid_source)

            def valid_score(tag_probs):
                return outputs.label_metrics(tag_probs, data.valid_set, data.dataset)["mAP"]
        probe = linear_probe.fit(self.steps.features(data.train_source), data.user_tags, valid_features, valid_score)
        head = self.model.get_layer(models.HEAD)
        head.set_weights([probe.kernel.astype(np.float32), probe.bias.astype(np.float32)])
        head_init = self.records.head_init = {"head_init": "linear_probe", "C": probe.c, "trials": probe.trials,
                                              "seconds": time.perf_counter() - started}
        if self.chief:
            io_utils.write_json(self.layout.head_init, head_init)
        tried = ", ".join(f"{t['C']:g}: {t['validation_mAP']:.3f}" for t in probe.trials)
        self.log(f"tag head from a linear probe on the starting features (C = {probe.c:g}"
                 + (f"; validation mAP by C: {tried}" if tried else "") + f"; {head_init['seconds']:.1f} s)")

    def _check_spread(self):
        """One warning line when phi_0 predicts (nearly) the same for every image."""
        data = self.data
        probs = self.steps.predict(data.valid_source if data.valid_source is not None else data.train_source)
        warning = diagnostics.low_spread_warning(probs)
        if warning:
            self.log(f"warning: {warning}")
        return diagnostics.prediction_spread(probs)["tag_std"]

    def _finish_stage1(self):
        """phi_0's metrics and the candidates Z, written before the checkpoint moves to stage 2."""
        data, records, steps = self.data, self.records, self.steps
        records.stage1_metrics = {"Multi-CNN": outputs.evaluation_scores(steps, data),
                                  "tag_std": self._check_spread()}
        if self.chief:
            io_utils.write_json(self.layout.stage1_metrics, records.stage1_metrics)
        neighbour = self.config.neighbours
        on_device = neighbour.candidate_search == "exact" and bool(tf.config.list_logical_devices("GPU"))
        how = {"exact": "exactly" + (" on the GPU" if on_device else ""), "ivf": "with an inverted-file index",
               "pca": f"in {neighbour.candidate_dims} principal components"}[neighbour.candidate_search]
        self.log(f"computing {self.num_candidates} candidates for {len(data.train_idx)} images {how}")
        train_features = steps.features(data.train_source)
        if self.chief and self.config.output.save_stage1_features:
            records.phi0 = {"train": train_features.astype(np.float32),
                            "eval": steps.features(data.eval_source).astype(np.float32),
                            "eval_tag_probs": steps.predict(data.eval_source).astype(np.float32)}
            outputs.write_phi0(self.layout, records.phi0)
        started, last = time.perf_counter(), [time.perf_counter()]

        def progress(done, total):
            if time.perf_counter() - last[0] > 30 or done == total:
                last[0] = time.perf_counter()
                elapsed = last[0] - started
                self.log(f"candidates: {done}/{total} images, {elapsed:.0f} s, "
                         f"ETA {hooks_lib.format_eta(elapsed / done * (total - done))}")
        # Z: each image's M nearest other images.
        records.candidates = search.candidates(train_features, self.num_candidates, neighbour.candidate_search,
                                               neighbour.candidate_dims, self.config.runtime.seed, on_device,
                                               progress)
        # phi_0's weights alone, for runs that start stage 2 from it (--warm_start_from).
        state_lib.write_weights(self.model, self.own.phi0_weights)
        if self.chief:
            outputs.write_npy(self.layout.candidates, records.candidates)
        self.state.move_to(2)
        self.state.save()

    def _epoch_order(self, epoch, part=0):
        return np.random.default_rng([self.config.runtime.seed, 0, epoch] + ([1, part] if part else [])).permutation(
            len(self.data.train_idx))

    def _shuffled_batch(self, start, order_of_pass):
        """The batch at `start` of a stream of shuffled passes over the training images; pass p in
        the order `order_of_pass(p)`."""
        n, s = len(self.data.train_idx), self.config.schedule.batch_size
        positions = np.arange(start, start + s)
        passes = positions // n
        idx = np.concatenate([np.take(order_of_pass(int(p)), positions[passes == p] % n)
                              for p in np.unique(passes)])
        return self.data.train_source.get(idx), self.data.user_tags[idx], idx

    def _stage1_batch(self, epoch, step):
        """Stage 1 reads one stream of passes, pass p in its own seeded order, whatever the spacing
        of the validation checks."""
        start = (epoch * self.steps_per_epoch[1] + step) * self.config.schedule.batch_size
        return self._shuffled_batch(start, self._epoch_order)

    def _plain_batch(self, epoch, step):
        """Stage-2 steps of the 'Multi-CNN, same budget' baseline: shuffled batches as in stage 1.

        A stage-2 epoch is m passes over the images; pass p of stage-2 epoch e has its own order."""
        return self._shuffled_batch(step * self.config.schedule.batch_size,
                                    lambda p: self._epoch_order(epoch, 1 + p))

    def _stage2_prepare(self, epoch, step):
        """Algorithm 1's batch `step` of `epoch`, the part without the weights (read ahead)."""
        return epoch, step, self.batches.prepare(step, epoch)

    def _stage2_finish(self, prepared):
        """Algorithm 1's choice of neighbours for a prepared batch, with the live weights."""
        epoch, step, part = prepared
        self.batches.set_epoch(epoch)
        self.batches.set_step(epoch * self.steps_per_epoch[2] + step)
        return self.batches.finish(part)

    def _run_stage(self, stage, prepare, finish=None):
        """`loop.run_stage` with each batch read ahead while the step before it trains
        (`inputs.Prefetcher`; --prefetch_batches), timed by the `hooks.InputWait` hook."""
        prefetcher = inputs.Prefetcher(prepare, self.steps_per_epoch[stage], finish,
                                       self.config.runtime.prefetch_batches)
        try:
            loop.run_stage(self.run_context, stage, self.epochs[stage], prefetcher,
                           [hooks_lib.InputWait(prefetcher)] + self.hooks(stage))
        finally:
            prefetcher.close()

    def _max_pixels(self):
        # The prepared data's pixel limit (older prepared sets: the default) also guards serving.
        return self.dataset.info.get("prepare_settings", {}).get("max_pixels", dataset_lib.MAX_PIXELS)

    def export(self, export_dir):
        """Exports the current model as a new SavedModel version under `export_dir`; returns its path."""
        return serving.export(self.model, self.dataset.tag_names, self.input_shape[0], self.input_shape[-1],
                                 export_dir, self.config.output.export_top_k, max_pixels=self._max_pixels(),
                                 data_identity=self.data.identity)

