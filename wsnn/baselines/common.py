"""What the compared methods share: their inputs and the binary tag matrix G.

Every scorer of `wsnn.baselines` (`knn_scores`, `tagvote_scores`,
`cca_scores`, `nmf_scores`, `tagprop_scores`, `tagfeature_scores`,
`tagexample_scores`) takes the same three inputs first:

  train_features: N x d visual features of the training images.
  train_user_tags: G, N x C user tags of the training images
    (scipy.sparse or dense; nonzero means tagged).
  query_features: Q x d visual features of the images to score.

and returns Q x C tag relevance scores (float32). `wsnn.benchmark.methods`
registers each as one scorer of one signature.
"""

import numpy as np
import scipy.sparse


def binary_tags(user_tags, num_train=None):
    """G as a float32 CSR matrix with every nonzero entry set to 1.

    Raises:
      ValueError: `num_train` given and G has another number of rows.
    """
    tags = scipy.sparse.csr_matrix(user_tags)
    tags = (tags != 0).astype(np.float32)
    tags.eliminate_zeros()
    if num_train is not None and tags.shape[0] != num_train:
        raise ValueError(f"train_user_tags has {tags.shape[0]} rows for {num_train} training images")
    return tags
