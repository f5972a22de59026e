"""Neighbourhood candidates Z and the dynamic-neighbour batches of Algorithm 1.

Zhang et al. (AAAI 2018), "Dynamic Neighbors": the initial network phi_0
embeds every image and each image i gets the candidate set Z_i of its M
nearest images by Euclidean distance (`wsnn.search.nearest`). During stage-2
training, each batch is built by Algorithm 1 (`NeighbourBatches`): for each of
the next s/m anchor images, embed the anchor and its M candidates with the
*current* network phi_n, keep the m-1 candidates now nearest to the anchor,
and concatenate the s/m groups of m images into one batch of s.

Batch layout (what `wsnn.losses` expects): s/m consecutive groups of m rows;
row 0 of each group is the anchor, rows 1..m-1 its neighbours, nearest first.

Exact Algorithm 1 embeds s/m * (M+1) images per step (4,104 at the paper's
s=64, m=8, M=512): far more forward work than the step itself. The fast mode
(``bank`` given) ranks each anchor's candidates against an embedding bank,
one feature row per training image, all computed with the same (older)
weights; the caller re-embeds the whole bank every so often
(`refresh_bank`). With ``shortlist`` k > 0, the anchor and its k candidates
nearest in the bank are embedded with the current network and the m-1
nearest among them are chosen from those current features, as in the exact
mode. The cost is s/m * (k+1) embeddings per step (none for k=0) plus N per
refresh, whatever M is. With ``extrapolation`` c > 0, each row is read as
bank + c * age * drift, the drift per step being the difference between the
last two refreshes: features move smoothly under SGD, and this first-order
guess of where they are now agrees better with the exact choice than the
stored rows (at the cost of a second N x d array).

Rows are never written back one by one: when the network drifts, rows of
different ages are not comparable (a freshly embedded anchor against
candidates embedded a hundred steps earlier ranks worse than an anchor and
candidates that are all that old; measured in BUILD_NOTES.md).
"""

import math

import keras
import numpy as np
import scipy.sparse

from wsnn import checks, search

__all__ = ["NeighbourBatches", "neighbour_recall"]


def neighbour_recall(indices, reference, group_size):
    """Mean share of each group's m-1 reference neighbours that `indices` also chose.

    Both are flat s-vectors of s/m groups (anchor first) with the same anchors.
    """
    groups = np.asarray(indices).reshape(-1, group_size)
    reference = np.asarray(reference).reshape(-1, group_size)
    if not np.array_equal(groups[:, 0], reference[:, 0]):
        raise ValueError("the two batches have different anchors")
    return float(np.mean([len(np.intersect1d(g[1:], r[1:])) / (group_size - 1)
                          for g, r in zip(groups, reference)]))


class NeighbourBatches(keras.utils.PyDataset):
    """Training batches of anchors and their current nearest neighbours (Algorithm 1).

    A `keras.utils.PyDataset` (Keras 3's name for `tf.keras.utils.Sequence`):
    ``len()``, ``[i]`` and `on_epoch_end`, as the paper's design has it. The
    trainer keeps its own loop (no `model.fit`) and reads batch i in two
    parts: `prepare` (anchors, candidates and their images: no weights
    involved, so `wsnn.training.inputs.Prefetcher` runs it in a background
    thread while the previous step trains) and `finish` (the choice of
    neighbours with the live weights). ``batches[i]`` is both at once.

    Each epoch every image is an anchor exactly once, in an order shuffled by
    ``np.random.default_rng([seed, epoch])``. Batch i takes the next s/m
    anchors of that order (the last batch wraps around to the start of the
    order so that every batch has exactly s rows), embeds each anchor and its
    M candidates with `embed_fn`, and keeps, per anchor, the m-1 candidates
    nearest to it in that embedding (equal distances: lower candidate rank
    first).

    `embed_fn` must use the model being trained (not a copy of its weights),
    so the neighbours follow the network phi_n as it learns.

    Items are ``(images, user_tags, indices)``, for the trainer's own loop
    (not Keras' (x, y, sample_weight)).

    Args:
      image_source: a `wsnn.data.pipeline.ImageSource` (``get`` and
        ``num_images``).
      user_tags: G, N x C (sparse or dense) 0/1.
      candidates: Z, N x M integer indices (`wsnn.search.nearest` with
        ``exclude_self=True``).
      embed_fn: callable(uint8 images k x H x W x ch) -> k x d features
        (NumPy or tensor).
      batch_size: s, rows per batch.
      group_size: m, the anchor plus its m-1 neighbours; 2 <= m < M, m | s.
      seed: seed of the anchor order.
      epoch: the epoch whose anchor order to use (see `set_epoch`).
      max_embed_batch: at most this many images per `embed_fn` call.
      bank: optional N x d features of all images, all from the same
        weights (e.g. phi_0's): selects the fast mode (see the module
        docstring); the array is copied (float32).
      shortlist: fast mode only: candidates per anchor embedded anew after
        ranking against the bank; 0 (rank against the bank alone) or in
        [m-1, M].
      extrapolation: fast mode only: c >= 0; once two refreshes have given
        each row's drift per step v, rows are read as bank + c * age * v
        (0: as stored).

    Raises:
      ValueError: sizes that do not fit together (see the messages).
    """

    def __init__(self, image_source, user_tags, candidates, embed_fn, batch_size=64,
                 group_size=8, seed=0, epoch=0, max_embed_batch=4096, bank=None, shortlist=0,
                 extrapolation=0.0):
        super().__init__()  # PyDataset's workers stay unused: see `prepare`
        self.image_source = image_source
        self.embed_fn = embed_fn
        self.batch_size = checks.positive_int(batch_size, "batch_size s")
        self.group_size = checks.positive_int(group_size, "group_size m")
        self.max_embed_batch = checks.positive_int(max_embed_batch, "max_embed_batch")
        self.seed = seed
        n = image_source.num_images
        self.user_tags = scipy.sparse.csr_matrix(user_tags)
        candidates = np.asarray(candidates)
        if candidates.ndim != 2 or not np.issubdtype(candidates.dtype, np.integer):
            raise ValueError(f"candidates must be an N x M integer array, got {candidates.dtype} "
                             f"{candidates.shape}")
        self.candidates = candidates.astype(np.int64)
        num_candidates = candidates.shape[1]
        checks.batch_shape(self.batch_size, self.group_size, num_candidates)
        if len(candidates) != n:
            raise ValueError(f"candidates have {len(candidates)} rows for N={n} images")
        if num_candidates >= n:
            raise ValueError(f"candidate count M={num_candidates} must be smaller than N={n}")
        if self.user_tags.shape[0] != n:
            raise ValueError(f"user_tags have {self.user_tags.shape[0]} rows for N={n} images")
        if candidates.min() < 0 or candidates.max() >= n:
            raise ValueError(f"candidate indices must be in [0, {n})")
        if np.any(self.candidates == np.arange(n)[:, np.newaxis]):
            raise ValueError("an image is among its own candidates")
        self.anchors_per_batch = self.batch_size // self.group_size
        self.bank = None
        if bank is not None:
            bank = np.asarray(bank)
            if bank.ndim != 2 or len(bank) != n:
                raise ValueError(f"bank must be N x d with N={n}, got shape {bank.shape}")
            self.bank = bank.astype(np.float32)  # N x d: float32 halves a large bank
        if int(shortlist) != shortlist or not (shortlist == 0 or self.group_size - 1 <= shortlist <= num_candidates):
            raise ValueError(f"shortlist={shortlist} must be 0 or in [m-1, M] = "
                             f"[{self.group_size - 1}, {num_candidates}]")
        if shortlist and self.bank is None:
            raise ValueError("shortlist needs a bank (the fast mode)")
        self.shortlist = int(shortlist)
        if not extrapolation >= 0:
            raise ValueError(f"extrapolation must be >= 0, got {extrapolation!r}")
        self.extrapolation = float(extrapolation)
        self.drift, self.bank_step, self.step = None, None, 0
        self.images_embedded = 0  # a running count, for cost measurements
        self._orders = {}
        self.set_epoch(epoch)

    def refresh_bank(self, step=0, progress=None):
        """Fast mode: embeds every image with the current network into the bank.

        Args:
          step: the caller's step count now (see `set_step`); with
            extrapolation, two refreshes at different steps give the drift.
          progress: optional callable(done, N) after each chunk.
        """
        n = self.image_source.num_images
        previous, previous_step = self.bank, self.bank_step
        self.bank = np.empty_like(previous)
        for start in range(0, n, self.max_embed_batch):
            indices = np.arange(start, min(start + self.max_embed_batch, n))
            self.bank[indices] = self._embed(self.image_source.get(indices))
            if progress is not None:
                progress(indices[-1] + 1, n)
        self.drift = None
        if self.extrapolation and previous_step is not None and step > previous_step:
            previous -= self.bank  # reused in place: the drift per step
            previous /= previous_step - step
            self.drift = previous
        self.bank_step = self.step = step

    def set_step(self, step):
        """The caller's step count, for the age of the bank (extrapolation)."""
        self.step = int(step)

    def _bank_features(self, indices):
        """Bank rows of `indices` (k x d float64), moved along the drift when extrapolating."""
        features = self.bank[indices].astype(np.float64)
        if self.drift is not None:
            features += (self.extrapolation * (self.step - self.bank_step)) * self.drift[indices]
        return features

    def set_epoch(self, epoch):
        """Uses the anchor order of `epoch` (the same for the same seed and epoch)."""
        self.epoch = int(epoch)

    def on_epoch_end(self):
        """Keras' call after an epoch: the next epoch's anchor order."""
        self.set_epoch(self.epoch + 1)

    @property
    def anchor_order(self):
        """The current epoch's order of the anchors."""
        return self.order_of(self.epoch)

    def order_of(self, epoch):
        """Epoch `epoch`'s order of the anchors: ``np.random.default_rng([seed, epoch])``'s permutation."""
        if epoch not in self._orders:  # the trainer asks every step; the two latest epochs are kept
            self._orders = {e: o for e, o in self._orders.items() if e > epoch - 2}
            self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(
                self.image_source.num_images)
        return self._orders[epoch]

    def __len__(self):
        return math.ceil(self.image_source.num_images / self.anchors_per_batch)

    def group_indices(self, index):
        """The s image indices of batch `index` (embeds, like `__getitem__`)."""
        return self.finish(self.prepare(index))[2]

    def __getitem__(self, index):
        """Batch `index` of the current epoch: (uint8 images s x H x W x ch, float32 G rows s x C,
        int64 indices s)."""
        return self.finish(self.prepare(index))

    def prepare(self, index, epoch=None):
        """The part of batch `index` that does not depend on the weights: its anchors, their
        candidates, the sorted distinct indices of both and, when they will be embedded, their
        images.

        Safe to run in another thread while a step changes the weights
        (`wsnn.training.inputs.Prefetcher`); `finish` does the rest.

        Args:
          index: the batch, in [0, len(self)).
          epoch: whose anchor order to use; None: the current epoch's.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range [0, {len(self)})")
        order = self.order_of(self.epoch if epoch is None else int(epoch))
        n, a = len(order), self.anchors_per_batch
        anchors = order[(index * a + np.arange(a)) % n]
        candidates = self.candidates[anchors]
        # Candidate sets overlap; each distinct image is read (and later embedded) once. Ranked
        # against the bank alone, only the s chosen images are read (by `finish`).
        loaded = np.unique(np.concatenate([anchors, candidates.reshape(-1)]))
        embeds = self.bank is None or self.shortlist
        return anchors, candidates, loaded, self.image_source.get(loaded) if embeds else None

    def finish(self, prepared):
        """Algorithm 1's choice for a `prepare`d batch, with the current weights (or bank).

        Returns:
          (uint8 images s x H x W x ch, float32 G rows s x C, int64 indices s).
        """
        anchors, candidates, loaded, images = prepared
        if self.bank is None:
            distances = self._current_distances(anchors, candidates, loaded, self._embed(images))
        else:
            distances = self._current_distances(anchors, candidates, loaded, self._bank_features(loaded))
            if self.shortlist:
                ranked = search.nearest_candidates(distances, self.shortlist)
                # Columns back in candidate-rank order, so that ties still go to the lower rank.
                candidates = np.take_along_axis(candidates, np.sort(ranked, axis=1), axis=1)
                shortlisted = np.unique(np.concatenate([anchors, candidates.reshape(-1)]))
                images = images[np.searchsorted(loaded, shortlisted)]
                loaded = shortlisted
                distances = self._current_distances(anchors, candidates, loaded, self._embed(images))
        nearest = search.nearest_candidates(distances, self.group_size - 1)
        chosen = np.take_along_axis(candidates, nearest, axis=1)
        indices = np.concatenate([anchors[:, np.newaxis], chosen], axis=1).reshape(-1).astype(np.int64)
        user_tags = self.user_tags[indices].toarray().astype(np.float32)
        if images is None:
            return self.image_source.get(indices), user_tags, indices
        return images[np.searchsorted(loaded, indices)], user_tags, indices

    @staticmethod
    def _current_distances(anchors, candidates, loaded, features):
        """a x k distances of each anchor to its candidates, `features` being those of `loaded`."""
        return search.candidate_distances(features, np.searchsorted(loaded, anchors),
                                          np.searchsorted(loaded, candidates))

    def _embed(self, images):
        """Features (float64, k x d) from `embed_fn`, at most max_embed_batch images per call."""
        self.images_embedded += len(images)
        parts = []
        for start in range(0, len(images), self.max_embed_batch):
            chunk = images[start:start + self.max_embed_batch]
            part = np.asarray(self.embed_fn(chunk))
            if len(part) != len(chunk):
                raise ValueError(f"embed_fn returned {len(part)} rows for {len(chunk)} images")
            parts.append(part.reshape(len(chunk), -1))
        # float64 so that distances between nearby features keep their order.
        return np.concatenate(parts).astype(np.float64)
