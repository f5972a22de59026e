"""Tests for TagCooccur (wsnn.baselines.tagcooccur), worked by hand."""

import numpy as np
import pytest
import scipy.sparse

from wsnn.baselines import common, tagcooccur

# 5 images, 4 tags a, b, c, d (columns 0..3):
#   image 0: a b      image 1: a b c      image 2: a c      image 3: a d      image 4: (none)
# Counts |t|: a 4, b 2, c 2, d 1. Co-occurrence |u & c|:
#        a  b  c  d
#   a    4  2  2  1
#   b    2  2  1  0
#   c    2  1  2  0
#   d    1  0  0  1
# Candidate lists (u first, then decreasing |u & c|, ties by lower index; only |u & c| > 0):
#   a: a b c d      b: b a c      c: c a b      d: d a
# rank(r) = 4 / (4 + r - 1): r=1 -> 1, r=2 -> 4/5, r=3 -> 2/3, r=4 -> 4/7.
# log2 counts: a 2, b 1, c 1, d 0.
# stability(u) = 9 / (9 + |9 - log2|u||):  a 9/16, b 9/17, c 9/17, d 9/18.
# descriptiveness(c) = 11 / (11 + |11 - log2|c||): a 11/20, b 11/21, c 11/21, d 11/22.
G = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]])
S_A, S_B, S_C, S_D = 9 / 16, 9 / 17, 9 / 17, 9 / 18
D_A, D_B, D_C, D_D = 11 / 20, 11 / 21, 11 / 21, 11 / 22


def test_candidate_ranks_and_promotions():
    ranks, counts = tagcooccur.candidate_ranks(common.binary_tags(G))
    np.testing.assert_array_equal(counts, [4, 2, 2, 1])
    # 0 = not in the list (never co-occurs).
    np.testing.assert_array_equal(ranks.toarray(), [[1, 2, 3, 4], [2, 1, 3, 0], [2, 3, 1, 0], [2, 0, 0, 1]])
    np.testing.assert_allclose(tagcooccur.frequency_promotion(counts, 9), [S_A, S_B, S_C, S_D])
    np.testing.assert_allclose(tagcooccur.frequency_promotion(counts, 11), [D_A, D_B, D_C, D_D])


def test_scores_by_hand():
    scores = tagcooccur.tagcooccur_scores(scipy.sparse.csr_matrix(G))
    # Image 0, U = {a, b}, |U| = 2; score(c) = desc(c) * sum_u stab(u) * rank(u, c) / 2:
    #   a: a is rank 1 in a's list, rank 2 in b's     -> D_A (S_A * 1 + S_B * 4/5) / 2   = 0.27116
    #   b: rank 2 in a's list, rank 1 in b's          -> D_B (S_A * 4/5 + S_B * 1) / 2   = 0.25651
    #   c: rank 3 in both lists                       -> D_C (S_A * 2/3 + S_B * 2/3) / 2 = 0.19065
    #   d: rank 4 in a's list, not in b's             -> D_D (S_A * 4/7) / 2             = 0.08036
    image0 = [D_A * (S_A + S_B * 4 / 5) / 2, D_B * (S_A * 4 / 5 + S_B) / 2,
              D_C * (S_A + S_B) * 2 / 3 / 2, D_D * S_A * 4 / 7 / 2]
    # Image 3, U = {a, d}:
    #   a: rank 1 in a's, rank 2 in d's -> D_A (S_A + S_D * 4/5) / 2
    #   b: rank 2 in a's only           -> D_B S_A 4/5 / 2
    #   c: rank 3 in a's only           -> D_C S_A 2/3 / 2
    #   d: rank 4 in a's, 1 in d's      -> D_D (S_A 4/7 + S_D) / 2
    image3 = [D_A * (S_A + S_D * 4 / 5) / 2, D_B * S_A * 4 / 5 / 2,
              D_C * S_A * 2 / 3 / 2, D_D * (S_A * 4 / 7 + S_D) / 2]
    np.testing.assert_allclose(scores[0], image0, rtol=1e-6)
    np.testing.assert_allclose(scores[3], image3, rtol=1e-6)
    np.testing.assert_allclose(scores[0], [0.2711581, 0.2565126, 0.1906513, 0.0803571], rtol=1e-6)
    # Image 4 has no user tags: all zero.
    np.testing.assert_array_equal(scores[4], 0)
    # Unnormalised scores are |U| = 2 times larger; dense input equals sparse input.
    np.testing.assert_allclose(tagcooccur.tagcooccur_scores(G, normalize=False)[0], np.multiply(image0, 2), rtol=1e-6)
    np.testing.assert_allclose(tagcooccur.tagcooccur_scores(G), scores)


def test_m_limits_candidates():
    # m = 2 keeps a: a b; b: b a; c: c a; d: d a. Image 0 (a, b): c and d fall out of both lists,
    # a and b keep their ranks (1 and 2) and so their scores.
    scores = tagcooccur.tagcooccur_scores(G, m=2)
    np.testing.assert_allclose(
        scores[0], [D_A * (S_A + S_B * 4 / 5) / 2, D_B * (S_A * 4 / 5 + S_B) / 2, 0, 0], rtol=1e-6)
    # m = 1: each user tag votes only for itself -> image 0: a D_A S_A / 2, b D_B S_B / 2.
    np.testing.assert_allclose(tagcooccur.tagcooccur_scores(G, m=1)[0], [D_A * S_A / 2, D_B * S_B / 2, 0, 0],
                               rtol=1e-6)


def test_new_images_and_tags_unknown_to_training():
    # Statistics from images 0..2 only: counts a 3, b 2, c 2, d 0; d has no list.
    # lists: a: a b c (|a&b| = |a&c| = 2, b first by index); b: b a c; c: c a b.
    # A new image tagged a, d: d has no statistics, so U = {a} and |U| = 1:
    #   a: D'_a S'_a,  b: D_B S'_a 4/5,  c: D_C S'_a 2/3,  d: never a candidate -> 0,
    # with log2 3 for a: S'_a = 9 / (9 + 9 - log2 3), D'_a = 11 / (11 + 11 - log2 3).
    s_a, d_a = 9 / (18 - np.log2(3)), 11 / (22 - np.log2(3))
    scores = tagcooccur.tagcooccur_scores([[1, 0, 0, 1], [0, 0, 0, 1]], train_user_tags=G[:3])
    np.testing.assert_allclose(scores, [[d_a * s_a, D_B * s_a * 4 / 5, D_C * s_a * 2 / 3, 0], [0, 0, 0, 0]],
                               rtol=1e-6)


def test_rejects_mismatched_vocabularies():
    with pytest.raises(ValueError, match="tags"):
        tagcooccur.tagcooccur_scores(G[:, :3], train_user_tags=G)
