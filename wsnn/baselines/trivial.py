"""The two baselines that need no learning: RandomGuess and UserTags.

RandomGuess (Li et al. 2016, as the paper uses it): every label gets a score
drawn uniformly at random. The paper runs it 80 times; we score each draw and
report the mean (and standard deviation) of each metric over the draws.

UserTags (refinement only): the user-provided tags themselves are the scores,
1 where the user gave the tag a label maps to, else 0. A label without a tag
in the vocabulary scores 0 for every image.
"""

import numpy as np

from wsnn import metrics


def user_tags_scores(dataset):
    """N x L scores of the UserTags baseline for a normalised dataset."""
    return dataset.label_scores(dataset.user_tags)


def random_guess(labels, draws=80, seed=0, no_positive="zero", **conventions):
    """Metrics of RandomGuess: mean and std over `draws` uniform score draws.

    Args:
      labels: N x L 0/1 ground truth.
      draws: how many random score matrices to score (the paper: 80).
      seed: seed of the draws.
      no_positive: miAP convention, see `wsnn.metrics.miap`.
      **conventions: `ties` and `empty_labels` of `wsnn.metrics.evaluate`.

    Returns:
      {metric: mean}, {metric: std}.
    """
    rng = np.random.default_rng(seed)
    results = [metrics.evaluate(rng.random(labels.shape), labels, no_positive=no_positive, **conventions)
               for _ in range(draws)]
    mean = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
    std = {k: float(np.std([r[k] for r in results])) for k in results[0]}
    return mean, std
