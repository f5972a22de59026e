"""TagFeature: tag classifiers on visual features augmented with a tag feature (Chen et al. 2012).

"Tag-based image retrieval improved by augmented features and group-based
refinement" (Chen, Xu, Tsang and Luo, IEEE TMM 14(4)), as benchmarked for
image annotation by Li et al. 2016 (ACM Computing Surveys 49(1); their code:
jingwei, doit/do_extract_tagfeat.sh and doit/do_tagfeat.sh). The idea: the
noisy user tags of many frequent tags are enough to learn weak visual
classifiers, and their responses, a "tag feature", describe an image in
terms of tags; the relevance classifier of a tag learnt on the visual
feature augmented with the tag feature can use the evidence of related tags.

With G the N x C 0/1 user tags of the training images, x an image's visual
feature and U the `num_tag_features` most frequent tags of G:

    p_u(x) = Platt-scaled response of tag u's classifier, u in U
    a(x)   = [ x / ||x||_2 ,  p(x) / sum_{u in U} p_u(x) ]        (d + |U| values)
    score(q, c) = Platt-scaled response of tag c's classifier on a(q)

Every "tag classifier" (of the tag feature and of the output) is learnt the
same way, jingwei's negative bagging (model_based/negative_bagging.py and
generate_train_bags.py) with its linear SVM:

    P     = a random sample of `num_positives` (500) images tagged c (all if fewer)
    bag b = a random sample of max(|P|, 1000) images not tagged c (all if fewer),
            b = 1..`num_bags` (5)
    f_c(x) = (1 / num_bags) sum_b (w_b . x + v_b),  (w_b, v_b) a linear SVM on P vs bag b
    p_c(x) = 1 / (1 + exp(A_c f_c(x) + B_c))

(A_c, B_c) is Platt's sigmoid (jingwei's svms/find_ab.py) fitted on a fresh
random sample of `num_positives` images tagged c and max(5 x that, 1000)
images not tagged c (all if fewer), with Platt's targets (n+ + 1) / (n+ + 2)
and 1 / (n- + 2). The output is p_c(a(q)), a probability, so that scores of
different tags are comparable within an image (imAP, MicroAUC).

Choices:

* Cross-fitted tag features. The training images are split at random into
  `folds` (3) folds of (nearly) equal size; the tag feature of a training image
  comes from the tag classifiers learnt on the other folds, and that of a
  query from classifiers learnt on all training images. jingwei applies the
  classifiers to the very images they were learnt from, so a training
  image's tag feature partly memorises its own user tags and the output
  classifier learns to trust it more than it deserves on unseen queries;
  cross-fitting (a departure from jingwei) removes that leakage. Three
  folds: each fold's classifiers still learn from two thirds of the images,
  and the tag-feature classifiers, (folds + 1) x |U| x num_bags SVM fits,
  dominate the cost.
* Tags of the tag feature: the `num_tag_features` most frequent tags of G
  (ties by lower index; tags nobody used are left out), 400 by default as
  jingwei's vocabulary of the 400 most frequent training tags. Here the
  vocabulary is G's C tags, so with C <= 400 all used tags.
* Positives are the images tagged c and negatives all images not tagged c.
  jingwei also expands a tag's positives with its WordNet synonyms and drops
  negatives carrying related tags; without a lexicon here, neither is done.
* Scaling: the visual part is L2-normalised per row (jingwei's visual
  feature is the L2-normalised fc7, "fc7relul2"; an all-zero row stays zero)
  and the tag part is the L1-normalised vector of probabilities, as
  jingwei's model_based/tagfeat/tagvotes2feature.py. The tag-feature
  classifiers see the L2-normalised visual features too.
* Classifier: scikit-learn's LinearSVC(loss="squared_hinge", dual=False,
  C=1, tol=0.01, class_weight="balanced"), i.e. liblinear's primal
  L2-regularised L2-loss SVM as jingwei calls it ("-s 2", C = 1, liblinear's
  default stopping tolerance 0.01 for that solver, class weights
  beta = 0.5, which are exactly "balanced"). It is jingwei's solver,
  deterministic, and the fastest of the candidates measured on a bag of
  1,500 x 64 (about 15 ms a fit, mostly fixed overhead; LogisticRegression
  about twice that and a different loss; SGDClassifier hardly faster and
  only approximately converged). jingwei trains without a bias (liblinear
  "-B -1") on non-negative ReLU features; here an intercept is learnt
  (liblinear's regularised bias), because the features need not be
  non-negative and a tag's decision boundary need not pass the origin.
* A tag with no positive (or no negative) among the images a classifier
  learns from gets a constant probability, the fraction of those images
  tagged: 0 (or 1). This holds for the tag feature (per fold) and for the
  output scores.
* Platt's (A, B) minimise the cross-entropy by Newton's method with
  backtracking, from libsvm's starting point, as libsvm's sigmoid_train
  (which jingwei's find_ab.py calls) does; written here in NumPy.
* Chen et al.'s group-based refinement of retrieval results is not part of
  Li et al.'s benchmarked TagFeature and is omitted.
* Randomness: one `np.random.default_rng(seed)` draws the fold assignment
  first (`fold_ids`), then every sample in a fixed order: the tag-feature
  classifiers fold by fold (then on all images), tag by tag in decreasing
  frequency, then the output classifiers tag by tag. Each classifier draws
  its positives, then its bags, then its Platt sample; samples are used in
  increasing image order.
"""

import collections

import numpy as np
import scipy.special
from sklearn.svm import LinearSVC

from wsnn import checks, search
from wsnn.baselines import common

__all__ = ["tagfeature_scores", "augmented_features", "fold_ids", "TagModels", "empty_models", "fit_tag_models",
           "tag_probabilities", "linear_svm", "platt_fit", "platt_sample", "draw", "unit_rows"]

MIN_NEGATIVES = 1000  # jingwei's least number of negatives in a bag or a Platt sample
PLATT_NEGATIVE_RATIO = 5  # negatives per positive in jingwei's Platt sample ("npr5")

TagModels = collections.namedtuple("TagModels", "coef intercept slope offset constant")
TagModels.__doc__ = """Calibrated linear classifiers of T tags.

coef (d x T) and intercept (T) give the decision f = x @ coef + intercept;
slope and offset (T) are Platt's A and B, p = 1 / (1 + exp(A f + B));
constant (T) is the fixed probability of a tag without positives or
negatives and NaN for a learnt tag.
"""


def empty_models(dim, num_tags):
    """TagModels of `num_tags` tags, all constant NaN (to be filled in)."""
    return TagModels(np.zeros((dim, num_tags)), np.zeros(num_tags), np.zeros(num_tags), np.zeros(num_tags),
                     np.full(num_tags, np.nan))


def tag_probabilities(models, features):
    """Platt probabilities of every tag for every row of `features`: float32 (rows x T)."""
    decisions = np.asarray(features, np.float64) @ models.coef + models.intercept
    probabilities = scipy.special.expit(-(models.slope * decisions + models.offset))
    return np.where(np.isnan(models.constant), probabilities, models.constant).astype(np.float32)


def unit_rows(features):
    """Rows scaled to unit L2 norm (float64); all-zero rows stay zero."""
    return np.asarray(search.for_distance(np.asarray(features, np.float64), "cosine"), np.float64)


def draw(indices, count, rng):
    """`count` of `indices` drawn at random without replacement (all if fewer), in increasing order."""
    if len(indices) <= count:
        return indices
    return np.sort(rng.choice(indices, count, replace=False))


def linear_svm(features, labels, C=1.0):
    """(w, v) of a linear SVM, decision x . w + v.

    Args:
      features: n x d rows.
      labels: n booleans, both classes present.
      C: the SVM's cost.

    Returns:
      (w, v): float64 length-d weights and the intercept.
    """
    svm = LinearSVC(C=C, loss="squared_hinge", dual=False, tol=0.01, class_weight="balanced")
    svm.fit(features, labels)
    return svm.coef_[0], svm.intercept_[0]


def platt_fit(decisions, labels):
    """Platt's sigmoid 1 / (1 + exp(A f + B)) fitted to decision values f.

    Minimises the cross-entropy against Platt's targets (n+ + 1) / (n+ + 2)
    for positives and 1 / (n- + 2) for negatives by Newton's method with
    backtracking, starting like libsvm from A = 0, B = log((n- + 1) / (n+ + 1)).

    Args:
      decisions: n decision values.
      labels: n booleans.

    Returns:
      (A, B) as floats.
    """
    f = np.asarray(decisions, np.float64)
    y = np.asarray(labels, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    negative_target = np.where(y, 1.0 / (n_pos + 2), (n_neg + 1.0) / (n_neg + 2))  # 1 - Platt's target
    design = np.stack([f, np.ones_like(f)], axis=1)

    def loss(ab):
        z = design @ ab
        return np.sum(np.logaddexp(0.0, z) - negative_target * z), z

    ab = np.array([0.0, np.log((n_neg + 1.0) / (n_pos + 1.0))])
    value, z = loss(ab)
    for _ in range(100):
        p = scipy.special.expit(z)
        gradient = design.T @ (p - negative_target)
        if np.abs(gradient).max() < 1e-5:
            break
        # The small ridge keeps the 2 x 2 Hessian invertible when all f are equal.
        hessian = (design * (p * (1 - p))[:, np.newaxis]).T @ design + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size >= 1e-10:
            new_value, new_z = loss(ab - size * step)
            if new_value <= value - 1e-4 * size * (gradient @ step):
                break
            size /= 2
        else:
            break  # no decrease along the Newton direction: converged to rounding
        ab, value, z = ab - size * step, new_value, new_z
    return float(ab[0]), float(ab[1])


def platt_sample(labels, num_positives, rng):
    """The rows Platt's sigmoid is fitted on: random positives and 5 x as many (at least 1000) negatives."""
    positives = draw(np.flatnonzero(labels), num_positives, rng)
    negatives = draw(np.flatnonzero(~labels), max(PLATT_NEGATIVE_RATIO * len(positives), MIN_NEGATIVES), rng)
    return np.concatenate([positives, negatives])


def fit_tag_models(features, tags, rng, num_positives=500, num_bags=5, C=1.0):
    """Negative-bagged linear SVMs with Platt scaling, one per column of `tags`.

    Args:
      features: n x d float64 features the classifiers learn from.
      tags: n x T boolean labels.
      rng: np.random.Generator for the samples.
      num_positives: positives sampled per tag (all if fewer).
      num_bags: negative bags, each of max(positives, 1000) images.
      C: the SVMs' cost.

    Returns:
      TagModels of the T tags; a tag without positives (or negatives) is
      constant 0 (or 1).
    """
    models = empty_models(features.shape[1], tags.shape[1])
    for t in range(tags.shape[1]):
        labels = tags[:, t]
        positives, pool = np.flatnonzero(labels), np.flatnonzero(~labels)
        if len(positives) == 0 or len(pool) == 0:
            models.constant[t] = float(len(positives) > 0)
            continue
        positives = draw(positives, num_positives, rng)
        for _ in range(num_bags):
            rows = np.concatenate([positives, draw(pool, max(len(positives), MIN_NEGATIVES), rng)])
            w, v = linear_svm(features[rows], labels[rows], C)
            models.coef[:, t] += w / num_bags
            models.intercept[t] += v / num_bags
        rows = platt_sample(labels, num_positives, rng)
        models.slope[t], models.offset[t] = platt_fit(features[rows] @ models.coef[:, t] + models.intercept[t],
                                                      labels[rows])
    return models


def fold_ids(num_train, folds, rng):
    """A random fold (0..folds-1) for each training image, fold sizes differing by at most one."""
    return rng.permutation(num_train) % folds


def _check(train_features, train_user_tags, query_features, **counts):
    """Validated (train, query, dense boolean G) and the positive-integer `counts`, in order."""
    train, query = search.check_features(train_features, query_features)
    tags = common.binary_tags(train_user_tags, len(train))
    values = [checks.positive_int(value, name) for name, value in counts.items()]
    return (train, query, tags.toarray() > 0, *values)


def _augment(train, tags, query, num_tag_features, folds, num_positives, num_bags, C, rng):
    """(train, query) augmented features; see `augmented_features`."""
    if folds < 2 or folds > len(train):
        raise ValueError(f"folds must be in [2, N={len(train)}], got {folds}")
    fold = fold_ids(len(train), folds, rng)
    train, query = unit_rows(train), unit_rows(query)
    counts = tags.sum(axis=0)
    used = np.argsort(-counts, kind="stable")[:num_tag_features]
    used = used[counts[used] > 0]
    train_tag_feature = np.zeros((len(train), len(used)), np.float32)
    for k in range(folds):
        learn = fold != k
        models = fit_tag_models(train[learn], tags[learn][:, used], rng, num_positives, num_bags, C)
        train_tag_feature[~learn] = tag_probabilities(models, train[~learn])
    models = fit_tag_models(train, tags[:, used], rng, num_positives, num_bags, C)
    query_tag_feature = tag_probabilities(models, query)
    return tuple(np.hstack([x, p / np.maximum(p.sum(axis=1, keepdims=True), np.finfo(np.float32).tiny)])
                 for x, p in ((train, train_tag_feature), (query, query_tag_feature)))


def augmented_features(train_features, train_user_tags, query_features, num_tag_features=400, folds=3,
                       num_positives=500, num_bags=5, C=1.0, seed=0):
    """The augmented features a(x) of the training images (cross-fitted) and the queries.

    Args:
      The same as `tagfeature_scores`'.

    Returns:
      (train_augmented, query_augmented): float64 arrays N x (d + U) and
      Q x (d + U), U the number of tags in the tag feature; the visual part
      L2-normalised, the tag part L1-normalised probabilities.

    Raises:
      ValueError: malformed inputs, a count < 1, or folds outside [2, N].
    """
    train, query, tags, num_tag_features, folds, num_positives, num_bags = _check(
        train_features, train_user_tags, query_features, num_tag_features=num_tag_features, folds=folds,
        num_positives=num_positives, num_bags=num_bags)
    return _augment(train, tags, query, num_tag_features, folds, num_positives, num_bags, C,
                    np.random.default_rng(seed))


def tagfeature_scores(train_features, train_user_tags, query_features, num_tag_features=400, folds=3,
                      num_positives=500, num_bags=5, C=1.0, seed=0):
    """TagFeature relevance: calibrated linear classifiers on tag-feature-augmented features.

    Args:
      train_features, train_user_tags, query_features: the scorers' inputs
        (`wsnn.baselines.common`); the queries are not training images.
      num_tag_features: the most frequent tags whose classifiers make the tag
        feature (jingwei: 400).
      folds: cross-fitting folds for the training images' tag features.
      num_positives: positives sampled per tag classifier (jingwei: 500).
      num_bags: negative bags per tag classifier (jingwei: 5).
      C: the SVMs' cost (jingwei: 1).
      seed: seed of the random samples.

    Returns:
      float32 array Q x C of probabilities; a tag no training image (or
      every training image) carries is 0 (or 1) for every query.

    Raises:
      ValueError: malformed inputs, a count < 1, or folds outside [2, N].
    """
    train, query, tags, num_tag_features, folds, num_positives, num_bags = _check(
        train_features, train_user_tags, query_features, num_tag_features=num_tag_features, folds=folds,
        num_positives=num_positives, num_bags=num_bags)
    rng = np.random.default_rng(seed)
    train, query = _augment(train, tags, query, num_tag_features, folds, num_positives, num_bags, C, rng)
    return tag_probabilities(fit_tag_models(train, tags, rng, num_positives, num_bags, C), query)
