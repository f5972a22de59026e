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

from wsnn import checks, diagnostics, linear_probe, losses, models, neighbours, search, similarity
from wsnn import serving
from wsnn.data import dataset as dataset_lib
from wsnn.data import decoded as decoded_lib
from wsnn.data import pipeline
from wsnn.training import distribute, hooks as hooks_lib, loop, outputs, selection as selection_lib
from wsnn.training import schedules, state as state_lib
from wsnn.training.steps import Steps


class Trainer:
    """One task's run: the split, the parts (steps, state, selection), both stages and outputs.

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
        self.dir = os.path.join(config.runtime.workdir, task)
        # Multi-worker: every worker computes and saves alike, but only the chief's files land in
        # the (shared) workdir; the others save into a scratch directory removed at the end.
        self.chief, self.role = distribute.worker_role(strategy)
        if self.chief:
            os.makedirs(self.dir, exist_ok=True)
        self.scratch = None if self.chief else tempfile.mkdtemp(prefix="wsnn-worker-")
        batch_size, group_size = config.schedule.batch_size, config.neighbours.group_size
        replicas = strategy.num_replicas_in_sync
        if batch_size % (group_size * replicas):
            raise ValueError(f"--batch_size={batch_size}: each of the {replicas} replicas needs whole "
                             f"groups; use a multiple of group_size x replicas = {group_size * replicas}")
        validation_fraction = config.data.validation_fraction if dataset.labels is not None else 0.0
        self.train_idx, self.valid_idx, self.eval_idx = state_lib.split(
            dataset.num_images, task, config.data.train_fraction, config.runtime.seed, validation_fraction)
        self.train_set = dataset.subset(self.train_idx)
        self.valid_set = dataset.subset(self.valid_idx) if len(self.valid_idx) else None
        self.eval_set = dataset.subset(self.eval_idx)
        n = len(self.train_idx)
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
        self.channels = config.data.channels or (
            (1 if dataset.image_array.ndim == 3 else 3) if dataset.image_array is not None else 3)
        # A set of image files is decoded once, at the input size, for every read of the run.
        self.decoded = None
        if dataset.image_array is None and config.data.image_size:
            self.decoded = decoded_lib.decoded_images(
                dataset, config.data.image_size, self.channels,
                os.path.join(config.runtime.workdir, "prepared", "cache"), log=self.log)
        self.train_source = self.source(self.train_idx, self.train_set)
        self.eval_source = self.source(self.eval_idx, self.eval_set)
        self.valid_source = self.source(self.valid_idx, self.valid_set) if self.valid_set is not None else None
        self.input_shape = self.train_source.get([0]).shape[1:]
        sched = config.schedule
        # The loop's unit ("epoch", between validation checks): stage 1 every image once or
        # --validate_every_steps steps; stage 2 (Algorithm 1) every image an anchor once, s/m per step.
        data_epoch = -(-n // batch_size)
        self.steps_per_epoch = {1: sched.validate_every_steps or data_epoch,
                                2: -(-n // (batch_size // group_size))}
        stage1_steps = sched.stage1_steps or sched.stage1_epochs * data_epoch
        self.epochs = {1: -(-stage1_steps // self.steps_per_epoch[1]), 2: sched.stage2_epochs}
        self.user_tags = self.train_set.user_tags.toarray().astype(np.float32)

        sem, loss = config.semantics, config.loss
        tag_similarity, _ = similarity.tag_similarity(
            self.train_set, sem.alpha, sem.similarity_measure, sem.ic_file or None,
            cache_dir=os.path.join(config.runtime.workdir, "prepared", "cache"))
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
        self.state = state_lib.TrainState(self.model, self.optimizers, strategy, os.path.join(self.dir, "checkpoints"),
                                          save_dir=self.output_dir("checkpoints"), max_to_keep=3 if self.chief else 1)
        self.identity = dict(dataset_lib.identity(dataset), num_images=dataset.num_images,
                             num_tags=dataset.num_tags)
        if self.chief:
            state_lib.check_identity(self.dir, self.identity)
            if not os.path.isfile(os.path.join(self.dir, serving.MODEL_FACTS)):
                serving.write_model_facts(self.dir, config.model.backbone, dataset.tag_names, self.input_shape,
                                             self._max_pixels())
        self.writer = (tf.summary.create_file_writer(os.path.join(config.runtime.workdir, "tensorboard", task))
                       if self.chief else tf.summary.create_noop_writer())
        self.steps = Steps(self.model, self.optimizers, self.logistic_loss, self.final_loss, strategy,
                           self.input_shape, sched.stage2_objective)
        self.candidates = None  # Z, once stage 1 has computed or a warm start has read it
        self.batches = None  # Algorithm 1's batches (stage 2, objective ours)
        self.step_times = {1: [], 2: []}  # (step seconds, of which building the batch) per step
        self.bank_refresh_times = []
        # phi_0's features and evaluation tag probabilities (--save_stage1_features; on resuming: as saved).
        self.phi0 = outputs.read_phi0(self.dir)
        self.stage1_metrics = state_lib.read_json(os.path.join(self.dir, outputs.STAGE1_METRICS))
        self.head_init = state_lib.read_json(os.path.join(self.dir, outputs.HEAD_INIT))
        self.neighbour_snapshots = state_lib.read_json(os.path.join(self.dir, outputs.SNAPSHOTS), [])
        # Per-epoch validation scores and diagnostics of both stages; the best epoch's weights of
        # the running stage are kept in best/.
        self.selection = selection_lib.Selection(
            self.validate if self.valid_source is not None else None, self.model, self.output_dir("best"),
            os.path.join(self.dir, outputs.HISTORY), self.chief, self.writer, sched.patience, self.log)
        self.epoch_diagnostics = {}  # {name: values watched this epoch} (`watch`)

    # ----- small public helpers (hooks and tools use these) ----------------------------------

    def log(self, text):
        """A progress line, prefixed with the task."""
        print(f"[{self.task}] {text}", flush=True)

    def watch(self, name, value):
        """Adds a diagnostic value of this epoch (averaged into the history at the epoch's end)."""
        self.epoch_diagnostics.setdefault(name, []).append(float(value))

    def source(self, rows, subset=None):
        """An ImageSource of the dataset's images `rows` (`subset`: `dataset.subset(rows)` when already
        made) at the run's input size and channels."""
        subset = self.dataset.subset(rows) if subset is None else subset
        if self.decoded is not None:
            return pipeline.ImageSource(subset, self.config.data.image_size, self.channels, decoded=self.decoded,
                                        rows=rows)
        return pipeline.ImageSource(subset, self.config.data.image_size or None, self.channels)

    def output_dir(self, name):
        """Where this process writes `name`: the task directory (chief) or its scratch directory."""
        return os.path.join(self.dir if self.chief else self.scratch, name)

    def embed(self, images):
        """phi of a uint8 batch with the current weights."""
        return self.steps.embed(images)

    def predict(self, source):
        """Tag probabilities P of every image of an ImageSource."""
        return self.steps.predict(source)

    def features(self, source):
        """phi of every image of an ImageSource."""
        return self.steps.features(source)

    def validate(self):
        """The four metrics and the prediction spread of the current model on the validation split."""
        probs = self.predict(self.valid_source)
        return dict(outputs.label_metrics(probs, self.valid_set, self.dataset), **diagnostics.prediction_spread(probs))

    def evaluate(self, max_images=None):
        """The four metrics of the current model on the protocol's evaluation images (at most
        `max_images` of them, a seeded sample; None: all)."""
        if self.dataset.labels is None or max_images == 0:
            return None
        source, subset = self.eval_source, self.eval_set
        if max_images and source.num_images > max_images:
            idx = np.random.default_rng(self.config.runtime.seed).choice(source.num_images, max_images,
                                                                         replace=False)
            source = self.source(self.eval_idx[np.sort(idx)])
            subset = source.dataset
        return outputs.label_metrics(self.predict(source), subset, self.dataset)

    def neighbours_of(self, anchor):
        """The m-1 candidates of training image `anchor` nearest under the current weights."""
        candidates = self.candidates[anchor]
        features = self.embed(self.train_source.get(np.concatenate([[anchor], candidates])))
        distances = np.sum((features[1:] - features[0]) ** 2, axis=1)
        return candidates[np.argsort(distances, kind="stable")[:self.config.neighbours.group_size - 1]]

    def snapshot_neighbours(self, epoch):
        """Records a fixed query's selected neighbours after `epoch` stage-2 epochs (Fig. 4)."""
        self.neighbour_snapshots = [x for x in self.neighbour_snapshots if x["epoch"] < epoch]
        self.neighbour_snapshots.append({"epoch": epoch, "step": self.state.global_step(), "query": 0,
                                         "neighbours": self.neighbours_of(0).tolist()})
        outputs.write_json(self.dir, outputs.SNAPSHOTS, self.neighbour_snapshots)

    def refresh_bank(self, step):
        """Fast neighbours: every training image into the bank with the current weights."""
        started = time.perf_counter()
        self.batches.refresh_bank(step)
        self.bank_refresh_times.append(time.perf_counter() - started)
        self.log(f"fast neighbours: embedded {len(self.batches.bank)} images into the bank in "
                 f"{self.bank_refresh_times[-1]:.1f} s")

    def tag_table(self, count=5):
        """User tags against the current refined tags for a few training images (Fig. 3)."""
        idx = np.arange(min(count, len(self.train_idx)))
        probs = self.steps.predict_images(self.train_source.get(idx))
        rows = ["| image | user tags | refined tags |", "|---|---|---|"]
        for i, p in zip(idx, probs):
            top = np.argsort(-p, kind="stable")[:5]
            refined = ", ".join(f"{self.dataset.tag_names[j]} {p[j]:.2f}" for j in top)
            rows.append(f"| {self.train_set.ids[i]} | {', '.join(self.train_set.tags_of(i))} | {refined} |")
        return "\n".join(rows)

    def hooks(self, stage):
        """The hooks of `stage`, in the order they run, the extra ones last."""
        watch = stage == 2 and self.config.schedule.stage2_objective == "ours"
        fast = watch and self.config.neighbours.neighbour_mode == "fast"
        chosen = [hooks_lib.NaNStop(), hooks_lib.StepTimes()]
        chosen += [hooks_lib.Diagnostics()] if watch else []
        chosen += [hooks_lib.Progress()]
        chosen += [hooks_lib.NeighbourImage()] if watch else []
        chosen += [hooks_lib.Checkpoint()]
        chosen += [hooks_lib.BankRefresh()] if fast else []
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
        if os.path.isfile(os.path.join(self.dir, outputs.METRICS)):
            # metrics.json is written last: the run is finished (its data checked in __init__).
            if self.chief and not os.path.isfile(os.path.join(self.dir, outputs.EVALUATED)):
                # Finished by an older wsnn: the final weights (the last checkpoint) give what is missing.
                self.state.checkpoint.restore(tf.train.latest_checkpoint(self.state.checkpoint_dir)).expect_partial()
                outputs.write_evaluated(self, self.predict(self.eval_source) if self.eval_set.labels is not None
                                        else None)
                self.log(f"wrote {outputs.EVALUATED} (the task was finished by an older wsnn)")
            result = outputs.TaskResult.load(self.dir)
            self.log(f"already done: outputs in {self.dir} (metrics.json, refined_tags.tsv), export "
                     f"{result.summary.get('export')}; to train again use --overwrite or another --workdir")
            return result if self.chief else None
        warm = self.config.runtime.warm_start_from
        how = self.state.resume(
            (lambda: self._warm_start(os.path.join(warm, self.task))) if warm else None)
        if how == "checkpoint":
            stage, epoch, step = self.state.position()
            self.log(f"resuming from {tf.train.latest_checkpoint(self.state.checkpoint_dir)} (stage {stage}, "
                     f"epoch {epoch + 1}, step {step})")
        schedule = self.config.schedule
        if int(self.state.stage) == 1:
            if self.state.at_start_of_stage() and self.config.model.head_init == "linear_probe":
                self._init_head()
            loop.run_stage(self, 1, self.epochs[1], self._stage1_batch, self.hooks(1))
            self._finish_stage1()
        if int(self.state.stage) == 2:
            if schedule.stage2_objective == "multi_cnn":
                next_batch = self._plain_batch
            else:
                if self.candidates is None:
                    self.candidates = np.load(os.path.join(self.dir, outputs.CANDIDATES))
                self.batches = self._neighbour_batches()
                next_batch = self._stage2_batch
            loop.run_stage(self, 2, self.epochs[2], next_batch, self.hooks(2))
            self.state.move_to(3)
            self.state.save()
        digest = state_lib.weights_digest(self.model)
        self.log(f"{self.role}: final weights sha256 {digest}")
        if not self.chief:
            if self.config.output.export:
                self.export(self.output_dir("export"))  # collective, as saving is
            shutil.rmtree(self.scratch, ignore_errors=True)
            return None
        return outputs.write_outputs(self, digest)

    def _neighbour_batches(self):
        neighbour = self.config.neighbours
        fast = neighbour.neighbour_mode == "fast"
        bank = None
        if fast:
            bank = np.zeros((len(self.train_idx), self.embed(self.train_source.get([0])).shape[1]), np.float32)
        return neighbours.NeighbourBatches(
            self.train_source, self.user_tags, self.candidates, self.embed, self.config.schedule.batch_size,
            neighbour.group_size, self.config.runtime.seed, bank=bank,
            shortlist=min(neighbour.shortlist, self.num_candidates), extrapolation=neighbour.bank_extrapolation)

    def _warm_start(self, source):
        """Starts stage 2 from another run's phi_0 (same data, split and seed): its weights,
        candidates and Multi-CNN metrics. Stage 1 does not depend on lambda1, lambda2, alpha or
        lambda_vis, so grid search and ablations need not train it again."""
        files = (outputs.CANDIDATES, outputs.STAGE1_METRICS, "phi0/ckpt.index", outputs.HISTORY)
        missing = [f for f in files if not os.path.isfile(os.path.join(source, f))]
        if missing:
            raise ValueError(f"--warm_start_from: {source} has no finished stage 1 ({', '.join(missing)} missing)")
        state_lib.check_same_data(source, self.identity)
        candidates = self.candidates = np.load(os.path.join(source, outputs.CANDIDATES))
        if len(candidates) != len(self.train_idx):
            raise ValueError(f"--warm_start_from: {source} has candidates for {len(candidates)} training "
                             f"images, this run has {len(self.train_idx)} (different data, split or seed)")
        state_lib.read_weights(self.model, os.path.join(source, "phi0"))
        for name in (outputs.CANDIDATES, outputs.STAGE1_METRICS, outputs.PHI0, outputs.HEAD_INIT):
            if self.chief and os.path.isfile(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(self.dir, name))
        self.stage1_metrics = state_lib.read_json(os.path.join(source, outputs.STAGE1_METRICS))
        self.head_init = state_lib.read_json(os.path.join(source, outputs.HEAD_INIT))
        self.phi0 = outputs.read_phi0(source)
        self.selection.history = [r for r in state_lib.read_json(os.path.join(source, outputs.HISTORY))
                                  if r["stage"] == 1]
        self.log(f"stage 2 starts from phi_0 of {source}")
        self.state.move_to(2)
        self.state.save()

    def _init_head(self):
        """Linear probing before fine-tuning: the tag head set to per-tag logistic regressions on the
        starting weights' features of the training images (`wsnn.linear_probe`; L2 strength chosen on
        validation mAP). Stage 1's epoch 0 scores it, so selection may keep it as phi_0."""
        started = time.perf_counter()
        valid_features = valid_score = None
        if self.valid_source is not None:
            valid_features = self.features(self.valid_source)

            def valid_score(tag_probs):
                return outputs.label_metrics(tag_probs, self.valid_set, self.dataset)["mAP"]
        probe = linear_probe.fit(self.features(self.train_source), self.user_tags, valid_features, valid_score)
        head = self.model.get_layer(models.HEAD)
        head.set_weights([probe.kernel.astype(np.float32), probe.bias.astype(np.float32)])
        self.head_init = {"head_init": "linear_probe", "C": probe.c, "trials": probe.trials,
                          "seconds": time.perf_counter() - started}
        if self.chief:
            outputs.write_json(self.dir, outputs.HEAD_INIT, self.head_init)
        tried = ", ".join(f"{t['C']:g}: {t['validation_mAP']:.3f}" for t in probe.trials)
        self.log(f"tag head from a linear probe on the starting features (C = {probe.c:g}"
                 + (f"; validation mAP by C: {tried}" if tried else "") + f"; {self.head_init['seconds']:.1f} s)")

    def _check_spread(self):
        """One warning line when phi_0 predicts (nearly) the same for every image."""
        probs = self.predict(self.valid_source if self.valid_source is not None else self.train_source)
        warning = diagnostics.low_spread_warning(probs)
        if warning:
            self.log(f"warning: {warning}")
        return diagnostics.prediction_spread(probs)["tag_std"]

    def _finish_stage1(self):
        """phi_0's metrics and the candidates Z, written before the checkpoint moves to stage 2."""
        self.stage1_metrics = {"Multi-CNN": self.evaluate(), "tag_std": self._check_spread()}
        if self.chief:
            outputs.write_json(self.dir, outputs.STAGE1_METRICS, self.stage1_metrics)
        neighbour = self.config.neighbours
        on_device = neighbour.candidate_search == "exact" and bool(tf.config.list_logical_devices("GPU"))
        how = {"exact": "exactly" + (" on the GPU" if on_device else ""), "ivf": "with an inverted-file index",
               "pca": f"in {neighbour.candidate_dims} principal components"}[neighbour.candidate_search]
        self.log(f"computing {self.num_candidates} candidates for {len(self.train_idx)} images {how}")
        train_features = self.features(self.train_source)
        if self.chief and self.config.output.save_stage1_features:
            self.phi0 = {"train": train_features.astype(np.float32),
                         "eval": self.features(self.eval_source).astype(np.float32),
                         "eval_tag_probs": self.predict(self.eval_source).astype(np.float32)}
            outputs.write_phi0(self.dir, self.phi0)
        started, last = time.perf_counter(), [time.perf_counter()]

        def progress(done, total):
            if time.perf_counter() - last[0] > 30 or done == total:
                last[0] = time.perf_counter()
                elapsed = last[0] - started
                self.log(f"candidates: {done}/{total} images, {elapsed:.0f} s, "
                         f"ETA {hooks_lib.format_eta(elapsed / done * (total - done))}")
        # Z: each image's M nearest other images.
        self.candidates = search.candidates(train_features, self.num_candidates, neighbour.candidate_search,
                                            neighbour.candidate_dims, self.config.runtime.seed, on_device, progress)
        # phi_0's weights alone, for runs that start stage 2 from it (--warm_start_from).
        state_lib.write_weights(self.model, self.output_dir("phi0"))
        if self.chief:
            outputs.write_npy(self.dir, outputs.CANDIDATES, self.candidates)
        self.state.move_to(2)
        self.state.save()

    def _epoch_order(self, epoch, part=0):
        return np.random.default_rng([self.config.runtime.seed, 0, epoch] + ([1, part] if part else [])).permutation(
            len(self.train_idx))

    def _shuffled_batch(self, start, order_of_pass):
        """The batch at `start` of a stream of shuffled passes over the training images; pass p in
        the order `order_of_pass(p)`."""
        n, s = len(self.train_idx), self.config.schedule.batch_size
        positions = np.arange(start, start + s)
        passes = positions // n
        idx = np.concatenate([np.take(order_of_pass(int(p)), positions[passes == p] % n)
                              for p in np.unique(passes)])
        return self.train_source.get(idx), self.user_tags[idx], idx

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

    def _stage2_batch(self, epoch, step):
        self.batches.set_epoch(epoch)
        self.batches.set_step(epoch * self.steps_per_epoch[2] + step)
        return self.batches[step]

    def _max_pixels(self):
        # The prepared data's pixel limit (older prepared sets: the default) also guards serving.
        return self.dataset.info.get("prepare_settings", {}).get("max_pixels", dataset_lib.MAX_PIXELS)

    def export(self, export_dir):
        """Exports the current model as a new SavedModel version under `export_dir`; returns its path."""
        return serving.export(self.model, self.dataset.tag_names, self.input_shape[0], self.input_shape[-1],
                                 export_dir, self.config.output.export_top_k, max_pixels=self._max_pixels(),
                                 data_identity=self.identity)
