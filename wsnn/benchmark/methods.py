"""The compared methods: one registry of scorers, and how a row is scored.

Every method that trains no network is a `Method`: a name and a scorer with
one signature,

    score(train_features, train_user_tags, query_features, context) -> Q x C

(the inputs of `wsnn.baselines.common`; `context` is a `Context`: the
benchmark's settings, the seed, the convention's neighbour distance and what
a few methods need besides). `METHODS[protocol]` lists them in the table's
order, and `baseline_rows` scores them all. In refinement the queries are
the training images themselves (`context.refine`), and the rows are read
at the evaluated ones. RandomGuess is no scorer (its row is the mean of 80
random draws' metrics, `wsnn.baselines.trivial`); the network rows
(`NETWORK_METHODS`) come from training (`wsnn.benchmark.networks`).
"""

import dataclasses
from typing import Any, Callable

import numpy as np

from wsnn import linear_probe, metrics
from wsnn.baselines import cca, knn, nmf, rpca, tagcooccur, tagexample, tagfeature, tagprop, tagvote, trivial
from wsnn.meter import PeakMemory


@dataclasses.dataclass(frozen=True)
class Context:
    """What a scorer may read besides the features and tags.

    Attributes:
      bench: the `BenchmarkConfig` (each method's k, rank, ...).
      seed: the run's seed.
      distance: the convention's neighbour distance ("euclidean" or "cosine").
      refine: the queries are the training images (refinement: an image does
        not vote for itself).
      train_users: uploader ids of the training images, or None.
      tag_similarity: callable() -> C x C xi (RPCA's tag graph, CCA's
        stand-in for word vectors).
      valid_features: features of the validation images (the linear probe's
        choice of C), or None.
      valid_score: callable(tag_probs of the validation images) -> their mAP.
    """

    bench: Any
    seed: int
    distance: str
    refine: bool
    train_users: Any
    tag_similarity: Callable
    valid_features: Any = None
    valid_score: Callable = None


@dataclasses.dataclass(frozen=True)
class Method:
    """A compared method that trains no network.

    Attributes:
      name: its row in the tables.
      score: score(train_features, train_user_tags, query_features, context) -> Q x C.
      features: "visual" (the pretrained backbone's, else phi_0's) or "phi0" (phi_0's; the row is
        left out unless the visual features are the pretrained ones).
      needs_validation: scored only with the pretrained features and a validation split.
    """

    name: str
    score: Callable
    features: str = "visual"
    needs_validation: bool = False


def _knn(train_x, train_g, query_x, c):
    return knn.knn_scores(train_x, train_g, query_x, k=min(c.bench.knn_k, len(train_x)), distance=c.distance)


def _tagvote(train_x, train_g, query_x, c):
    return tagvote.tagvote_scores(train_x, train_g, query_x, k=c.bench.tagvote_k, train_users=c.train_users,
                                  exclude_self=c.refine, distance=c.distance)


def _cca(train_x, train_g, query_x, c):
    return cca.cca_scores(train_x, train_g, query_x, dims=c.bench.cca_dims or None,
                          k=min(c.bench.knn_k, len(train_x)), tag_embeddings=c.tag_similarity())


def _nmf(train_x, train_g, query_x, c):
    return nmf.nmf_scores(train_x, train_g, query_x, rank=c.bench.nmf_rank, seed=c.seed)


def _tagprop(train_x, train_g, query_x, c):
    return tagprop.tagprop_scores(train_x, train_g, query_x, k=c.bench.tagprop_k, distance=c.distance, seed=c.seed)


def _tagfeature(train_x, train_g, query_x, c):
    return tagfeature.tagfeature_scores(train_x, train_g, query_x, seed=c.seed)


def _tagexample(train_x, train_g, query_x, c):
    return tagexample.tagexample_scores(train_x, train_g, query_x, num_positives=c.bench.tagexample_positives,
                                        vote_k=c.bench.tagvote_k, train_users=c.train_users, distance=c.distance,
                                        seed=c.seed)


def _linear_probe(train_x, train_g, query_x, c):
    """The linear probe on the pretrained features, its C chosen on the validation split's mAP."""
    return linear_probe.fit(train_x, train_g, c.valid_features, c.valid_score).predict(query_x)


def _user_tags(train_x, train_g, query_x, c):
    return train_g.toarray().astype(np.float32)


def _tagcooccur(train_x, train_g, query_x, c):
    return tagcooccur.tagcooccur_scores(train_g)


def _rpca(train_x, train_g, query_x, c):
    return rpca.rpca_refine(train_g, features=train_x, tag_similarity=c.tag_similarity(), lam=c.bench.rpca_lam,
                            max_iter=c.bench.rpca_max_iter)[0]


# The compared methods of the paper's Tables 2-5, in the tables' order; the annotation ones after the
# neighbour votes all use the same features as KNN.
METHODS = {
    "annotation": (Method("KNN", _knn), Method("TagVote", _tagvote),
                   Method("KNN (phi_0 features)", _knn, "phi0"), Method("TagVote (phi_0 features)", _tagvote, "phi0"),
                   Method("CCA", _cca), Method("NMF", _nmf), Method("TagProp", _tagprop),
                   Method("TagFeature", _tagfeature), Method("TagExample", _tagexample),
                   Method("Linear probe", _linear_probe, needs_validation=True)),
    "refinement": (Method("UserTags", _user_tags), Method("TagCooccur", _tagcooccur), Method("TagVote", _tagvote),
                   Method("TagVote (phi_0 features)", _tagvote, "phi0"), Method("RPCA", _rpca),
                   Method("Linear probe", _linear_probe, needs_validation=True)),
}
NETWORK_METHODS = ("Multi-CNN", "Multi-CNN (same budget)", "Ours", "Ours (bce)")
ANNOTATION_METHODS = ("RandomGuess", *(m.name for m in METHODS["annotation"]), *NETWORK_METHODS,
                      "Multi-CNN (true labels)")
REFINEMENT_METHODS = (*(m.name for m in METHODS["refinement"]), *NETWORK_METHODS)
TABLE_ORDER = {"annotation": ANNOTATION_METHODS, "refinement": REFINEMENT_METHODS}


def metric_options(convention):
    """The `metrics.evaluate` keywords of a convention (all but the neighbour distance)."""
    return {k: v for k, v in metrics.CONVENTIONS[convention].items() if k != "distance"}


def evaluate(tag_scores, dataset, labels, convention="wsnn"):
    """The four metrics and the per-label AP of N x C tag scores, under a `metrics.CONVENTIONS` name."""
    options = metric_options(convention)
    scores = dataset.label_scores(tag_scores)
    result = metrics.evaluate(scores, labels, label_names=dataset.label_names, **options)
    result["tag_std"] = float(np.asarray(tag_scores, np.float64).std(axis=0).mean())  # diagnostics.prediction_spread
    result["ap_per_label"] = [
        float(metrics.mean_average_precision(scores[:, [l]], labels[:, [l]], ties=options["ties"]))
        if labels[:, l].any() else None for l in range(labels.shape[1])]
    return result


def baseline_rows(bench, dataset, task, split, visual, phi0, tag_similarity_of, seed):
    """Every method of one protocol that trains no network; returns {method: result}.

    Args:
      bench: the `BenchmarkConfig`.
      dataset: the prepared set (with labels).
      task: "annotation" or "refinement".
      split: (train_idx, valid_idx, eval_idx) of the task; in refinement eval_idx indexes the training
        images, which are every image.
      visual: {"train", "eval"[, "valid"]} features of the neighbour methods and the compared methods
        (the pretrained backbone's with "valid", or phi_0's without one).
      phi0: phi_0's features for the "(phi_0 features)" rows, or None.
      tag_similarity_of: callable(training set) -> xi.
      seed: the run's seed.
    """
    train_idx, valid_idx, eval_idx = split
    convention = bench.convention
    train_set = dataset.subset(train_idx)
    labels = dataset.labels[eval_idx]
    valid_labels = dataset.labels[valid_idx]
    refine = task == "refinement"

    def valid_score(tag_probs):
        return metrics.evaluate(dataset.label_scores(tag_probs), valid_labels, **metric_options(convention))["mAP"]

    context = Context(bench, seed, metrics.CONVENTIONS[convention]["distance"], refine, train_set.users,
                      lambda: tag_similarity_of(train_set), visual.get("valid"), valid_score)
    features = {"visual": visual, "phi0": phi0 if phi0 is not None and visual is not phi0 else None}
    rows = {}
    if not refine:
        with PeakMemory() as use:
            random_guess = trivial.random_guess(labels, seed=seed, **metric_options(convention))[0]
        rows["RandomGuess"] = dict(random_guess, seconds=use.seconds, peak_mib=use.mib)
    for method in METHODS[task]:
        x = features[method.features]
        if x is None or (method.needs_validation and ("valid" not in visual or not len(valid_idx))):
            continue
        with PeakMemory() as use:
            tag_scores = method.score(x["train"], train_set.user_tags, x["train" if refine else "eval"], context)
            tag_scores = tag_scores[eval_idx] if refine else tag_scores
        rows[method.name] = dict(evaluate(tag_scores, dataset, labels, convention), seconds=use.seconds,
                                 peak_mib=use.mib)
        print(f"[{task}] seed {seed} {method.name}: mAP {rows[method.name]['mAP']:.3f} ({use.seconds:.1f} s)",
              flush=True)
    return rows
