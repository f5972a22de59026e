"""TagExample: tag classifiers from relevant positive and negative examples (Li and Snoek 2013).

"Classifying tag relevance with relevant positive and negative examples"
(ACM Multimedia 2013), as benchmarked for image annotation by Li et al. 2016
(ACM Computing Surveys 49(1); their code: jingwei, doit/do_relexample.sh,
doit/do_create_refined_annotation.sh and model_based/negbp.py). User-tagged
images make noisy positives and random untagged images uninformative
negatives; TagExample learns each tag's classifier from the tagged images
that look most relevant and from the untagged images the classifier
confuses most.

For each tag t, with G the N x C 0/1 user tags of the training images:

* Relevant positives P_t: the images tagged t, ranked by their TagVote
  relevance to t (Li et al. 2009, `wsnn.baselines.tagvote`: votes of the
  `vote_k` visual neighbours, the image itself excluded, minus the prior
  vote_k f(t) / N), highest first, equal relevance by lower index; the top
  `num_positives` (all if fewer).
* Relevant negatives by negative bootstrap (Li et al. 2011, 2013), from the
  pool of images not tagged t, with n = max(|P_t|, `num_negatives`):

      round 1:  bag B_1 = n random images of the pool (all if fewer)
      round r:  U_r = `num_candidates` random images of the pool (all if
                fewer), ranked by the current ensemble F_{r-1}, highest
                first (equal scores by lower index); skip the first
                floor(|U_r| / 100), then B_r = the next n
      each round: g_r = linear SVM on P_t vs B_r,
                  F_r = (1 / r) sum_{s <= r} g_s   (an average of linear
                  functions, itself linear)

  for `bootstrap_rounds` rounds, stopping early when the ensemble's error
  rate, (fraction of P_t scored < 0 + fraction of U_r scored > 0) / 2, is
  below 1e-4.
* Scores: p_t(q) = 1 / (1 + exp(A_t F(q) + B_t)), Platt's sigmoid fitted on
  a random sample of images tagged t and untagged ones, exactly as in
  `wsnn.baselines.tagfeature` (jingwei's find_ab.py), so that tags are
  comparable within an image.

Choices:

* Positives are ranked by TagVote alone. jingwei ranks them by a Borda fusion
  of TagVote (cosine, k = 1000) and a WordNet-based semantic-field
  relevance; without a lexicon here only the visual ranking is kept
  (vote_k = 1000 as jingwei; `distance="cosine"` for its cosine). With
  `train_users`, one vote per uploader, as `tagvote_scores` does.
* num_positives = 500, bootstrap_rounds = 10, num_negatives = 1000 and
  `num_candidates` = min(10000, max(5000, 10 |P_t|)) by default, the skip
  of the top 1% (taken as true positives the tags missed), the error-rate
  stop and the uniform average of the rounds' classifiers are jingwei's
  (negbp.py with npr = 10, T = 10, strategy "top").
* Negatives are all images not tagged t; jingwei also removes images
  carrying tags related to t by WordNet, not available here.
* Classifier: a linear SVM, scikit-learn's LinearSVC as in
  `wsnn.baselines.tagfeature.linear_svm` (liblinear primal L2-loss, C = 1,
  tol 0.01, balanced class weights as jingwei's beta = 0.5, with an
  intercept). Li and Snoek and jingwei use an intersection-kernel SVM with
  its fast approximation (fik, 50 bins on min-max scaled features), made
  for histogram features; on dense CNN-style features a linear SVM is the
  usual choice, its ensemble stays one linear function, and each round
  costs one fast liblinear fit. Features are used as given.
* A tag no training image carries gets the constant score 0, a tag every
  training image carries the constant 1 (the fraction of images tagged).
* Randomness: one `np.random.default_rng(seed)`, used tag by tag: first
  round 1's bag, then each later round's candidates, then the Platt
  sample. Sampled sets are used in increasing image order.
"""

import numpy as np

from wsnn import checks, search
from wsnn.baselines import common, tagfeature, tagvote

__all__ = ["tagexample_scores", "select_positives", "negative_bootstrap"]

SKIPPED_FRACTION = 0.01  # of the ranked candidates, taken as false negatives (jingwei)
MIN_ERROR_RATE = 1e-4  # jingwei's early stop


def _check_train(train_features, train_user_tags):
    """(train float features, N x C boolean G), checked."""
    train, _ = search.check_features(train_features)
    tags = common.binary_tags(train_user_tags, len(train))
    return train, tags.toarray() > 0


def _positives(train, tags, num_positives, vote_k, train_users, distance):
    """`select_positives` on checked inputs."""
    relevance = tagvote.tagvote_scores(train, tags, train, k=vote_k, train_users=train_users, exclude_self=True,
                                       distance=distance)
    chosen = []
    for t in range(tags.shape[1]):
        tagged = np.flatnonzero(tags[:, t])
        order = np.argsort(-relevance[tagged, t], kind="stable")  # stable: equal relevance by lower index
        chosen.append(tagged[order[:num_positives]])
    return chosen


def select_positives(train_features, train_user_tags, num_positives=500, vote_k=1000, train_users=None,
                     distance="euclidean"):
    """The relevant positives of every tag: its tagged images with the highest TagVote relevance.

    Args:
      train_features, train_user_tags: the scorers' inputs (`wsnn.baselines.common`).
      num_positives: positives kept per tag (all tagged images if fewer).
      vote_k: TagVote's neighbours (capped as `tagvote_scores` does).
      train_users: optional length-N uploader ids: one vote per uploader.
      distance: "euclidean" or "cosine" neighbours.

    Returns:
      A list of C int arrays of training indices, most relevant first
      (equal relevance by lower index).

    Raises:
      ValueError: malformed inputs, a count < 1, or an unknown distance.
    """
    num_positives = checks.positive_int(num_positives, "num_positives")
    train, tags = _check_train(train_features, train_user_tags)
    return _positives(train, tags, num_positives, vote_k, train_users, distance)


def negative_bootstrap(features, positives, pool, rng, rounds=10, num_negatives=1000, num_candidates=None,
                       C=1.0):
    """A tag's linear classifier learnt by negative bootstrap.

    Args:
      features: N x d float64 features of the training images.
      positives: indices of the positive examples (non-empty).
      pool: indices of the candidate negatives (non-empty, disjoint from
        `positives`).
      rng: np.random.Generator for the samples.
      rounds: the most bootstrap rounds.
      num_negatives: least size of a negative bag (max(|positives|, this)).
      num_candidates: candidates drawn per round; None: jingwei's
        min(10000, max(5000, 10 |positives|)).
      C: the SVMs' cost.

    Returns:
      (w, v, bags): the ensemble's weights and intercept (decision
      x . w + v) and the list of negative bags used, one index array per
      round, in increasing order.
    """
    if num_candidates is None:
        num_candidates = min(10000, max(5000, 10 * len(positives)))
    bag_size = max(len(positives), num_negatives)
    bags = [tagfeature.draw(pool, bag_size, rng)]
    w, v = np.zeros(features.shape[1]), 0.0
    for r in range(1, rounds + 1):
        if r > 1:
            candidates = tagfeature.draw(pool, num_candidates, rng)
            scores = features[candidates] @ w + v
            error = (np.mean(features[positives] @ w + v < 0) + np.mean(scores > 0)) / 2
            if error < MIN_ERROR_RATE:
                break
            ranked = candidates[np.argsort(-scores, kind="stable")]
            skip = int(len(candidates) * SKIPPED_FRACTION)
            bags.append(np.sort(ranked[skip:skip + bag_size]))
        rows = np.concatenate([positives, bags[-1]])
        labels = np.arange(len(rows)) < len(positives)
        w_r, v_r = tagfeature.linear_svm(features[rows], labels, C)
        w, v = w + (w_r - w) / r, v + (v_r - v) / r  # running mean of the rounds' classifiers
    return w, v, bags


def tagexample_scores(train_features, train_user_tags, query_features, num_positives=500, vote_k=1000,
                      train_users=None, distance="euclidean", bootstrap_rounds=10, num_negatives=1000,
                      num_candidates=None, C=1.0, seed=0):
    """TagExample relevance: calibrated linear classifiers from relevant positives and bootstrapped negatives.

    Args:
      train_features, train_user_tags, query_features: the scorers' inputs
        (`wsnn.baselines.common`); the queries are not training images.
      num_positives: relevant positives per tag (jingwei: 500).
      vote_k: TagVote's neighbours for ranking the positives (jingwei: 1000).
      train_users: optional length-N uploader ids: one TagVote vote per
        uploader.
      distance: "euclidean" or "cosine" (jingwei) neighbours for TagVote.
      bootstrap_rounds: negative bootstrap rounds (jingwei: 10).
      num_negatives: least size of a negative bag (jingwei: 1000).
      num_candidates: candidate negatives per round; None: jingwei's
        min(10000, max(5000, 10 |P_t|)).
      C: the SVMs' cost (jingwei: 1).
      seed: seed of the random samples.

    Returns:
      float32 array Q x C of calibrated probabilities (0 for every query
      where no training image carries the tag, 1 where every one does).

    Raises:
      ValueError: malformed inputs, a count < 1, or an unknown distance.
    """
    num_positives, vote_k, bootstrap_rounds, num_negatives = (
        checks.positive_int(value, name) for name, value in (
            ("num_positives", num_positives), ("vote_k", vote_k), ("bootstrap_rounds", bootstrap_rounds),
            ("num_negatives", num_negatives)))
    if num_candidates is not None:
        num_candidates = checks.positive_int(num_candidates, "num_candidates")
    train, tags = _check_train(train_features, train_user_tags)
    train, query = search.check_features(train, query_features)
    chosen = _positives(train, tags, num_positives, vote_k, train_users, distance)
    train, query = np.asarray(train, np.float64), np.asarray(query, np.float64)
    rng = np.random.default_rng(seed)
    models = tagfeature.empty_models(train.shape[1], tags.shape[1])
    for t, positives in enumerate(chosen):
        pool = np.flatnonzero(~tags[:, t])
        if len(positives) == 0 or len(pool) == 0:
            models.constant[t] = float(len(positives) > 0)
            continue
        w, v, _ = negative_bootstrap(train, positives, pool, rng, bootstrap_rounds, num_negatives, num_candidates,
                                     C)
        models.coef[:, t], models.intercept[t] = w, v
        rows = tagfeature.platt_sample(tags[:, t], num_positives, rng)
        models.slope[t], models.offset[t] = tagfeature.platt_fit(train[rows] @ w + v, tags[rows, t])
    return tagfeature.tag_probabilities(models, query)
