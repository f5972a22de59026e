"""Tests of wsnn.neighbours: Algorithm 1's batches (the search itself: tests/test_search.py).

Features are small integers throughout, so float32 distances are exact and
ties are real ties that the code and the NumPy references must break alike.
"""

import keras
import numpy as np
import pytest
import scipy.sparse

from wsnn import neighbours, search
from wsnn.data.dataset import from_tag_lists
from wsnn.data.pipeline import ImageSource
from wsnn.neighbours import NeighbourBatches, neighbour_recall

N, SIZE, M = 40, 4, 10


# --- NumPy references --------------------------------------------------------

def _ref_neighbours(features, candidates, anchor, m):
    """The m-1 candidates of `anchor` nearest to it in `features`."""
    z = candidates[anchor]
    distances = ((features[z] - features[anchor]) ** 2).sum(-1)
    return z[np.argsort(distances, kind="stable")[:m - 1]]


def _candidates(features, m):
    """Candidates Z: each image's m nearest other images."""
    return search.nearest(features, m, exclude_self=True)


def _dataset(seed=0):
    """N grey 4x4 images of small integers and random user tags."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 8, (N, SIZE, SIZE), dtype=np.uint8)
    tag_lists = [[f"t{j}" for j in range(6) if rng.random() < 0.4] + ["t6"] for _ in range(N)]
    return from_tag_lists([f"im{i}" for i in range(N)], tag_lists, image_array=images)


def _linear(weights):
    """embed_fn = flattened images @ W; reads W when called, so edits to W count."""
    return lambda images: images.reshape(len(images), -1).astype(np.float32) @ weights


def _batches(dataset, embed_fn, candidates=None, **kwargs):
    """Batches of 12 = 3 groups of 4; candidates Z from embed_fn unless given."""
    source = ImageSource(dataset)
    if candidates is None:
        candidates = _candidates(embed_fn(source.get(np.arange(N))), M)
    kwargs = dict(dict(batch_size=12, group_size=4), **kwargs)
    return NeighbourBatches(source, dataset.user_tags, candidates, embed_fn, **kwargs), candidates


def _pixel_candidates_and_random_embedding():
    """Z from raw pixels (phi_0) and a random integer linear embedding (phi_n)."""
    dataset = _dataset()
    weights = np.random.default_rng(2).integers(-3, 4, (SIZE * SIZE, 3)).astype(np.float32)
    return dataset, _linear(weights), _candidates(dataset.image_array.reshape(N, -1), M)


def test_batches_are_anchor_groups_of_current_nearest_candidates():
    # Z from phi_0 and batches from phi_n: the ranking must be redone.
    dataset, embed, candidates = _pixel_candidates_and_random_embedding()
    batches, _ = _batches(dataset, embed, candidates)
    features = embed(ImageSource(dataset).get(np.arange(N))).astype(np.float64)
    g = dataset.user_tags.toarray()
    assert len(batches) == 14  # ceil(40 / (12 / 4))
    for i in range(len(batches)):
        images, user_tags, indices = batches[i]
        assert images.shape == (12, SIZE, SIZE, 1) and images.dtype == np.uint8
        assert user_tags.dtype == np.float32 and indices.dtype == np.int64
        np.testing.assert_array_equal(images[..., 0], dataset.image_array[indices])
        np.testing.assert_array_equal(user_tags, g[indices])
        np.testing.assert_array_equal(batches.group_indices(i), indices)
        for group in indices.reshape(3, 4):
            np.testing.assert_array_equal(group[1:], _ref_neighbours(features, candidates, group[0], 4))


def test_every_image_is_an_anchor_once_per_epoch_and_the_last_batch_wraps():
    batches, _ = _batches(_dataset(), _linear(np.ones((SIZE * SIZE, 2), np.float32)))
    anchors = np.concatenate([batches.group_indices(i)[::4] for i in range(len(batches))])
    assert len(anchors) == 42
    np.testing.assert_array_equal(np.sort(anchors[:N]), np.arange(N))
    np.testing.assert_array_equal(anchors[N:], anchors[:2])  # wrap-around fill
    np.testing.assert_array_equal(anchors[:N], batches.anchor_order)


def test_order_depends_on_seed_and_epoch_only():
    dataset, embed = _dataset(), _linear(np.ones((SIZE * SIZE, 2), np.float32))
    first, _ = _batches(dataset, embed, seed=5, epoch=3)
    again, _ = _batches(dataset, embed, seed=5, epoch=3)
    for i in (0, 13):
        for a, b in zip(first[i], again[i]):
            np.testing.assert_array_equal(a, b)
    order = first.anchor_order.copy()
    first.set_epoch(4)
    assert first.epoch == 4 and not np.array_equal(first.anchor_order, order)
    np.testing.assert_array_equal(np.sort(first.anchor_order), np.arange(N))
    first.set_epoch(3)
    np.testing.assert_array_equal(first.anchor_order, order)
    other_seed, _ = _batches(dataset, embed, seed=6, epoch=3)
    assert not np.array_equal(other_seed.anchor_order, order)


def _two_view_dataset():
    """Pixel 0 is i and pixel 1 is 17 i mod 40, a scrambled copy of i.

    Embedded by pixel 0, the candidates of i are the images with the nearest
    i; embedded by pixel 1 the same candidates are ranked differently, so the
    chosen neighbours must change when the embedding does.
    """
    images = np.zeros((N, SIZE, SIZE), np.uint8)
    images[:, 0, 0] = np.arange(N)
    images[:, 0, 1] = (17 * np.arange(N)) % N
    return from_tag_lists([f"im{i}" for i in range(N)], [["t"]] * N, image_array=images)


def _pixel_weights(pixel):
    weights = np.zeros((SIZE * SIZE, 1), np.float32)
    weights[pixel] = 1.0
    return weights


def _groups(batches, i):
    return batches.group_indices(i).reshape(-1, batches.group_size)


def test_changing_the_embedding_weights_changes_the_neighbours():
    dataset = _two_view_dataset()
    weights = _pixel_weights(0)
    embed = _linear(weights)
    batches, candidates = _batches(dataset, embed)
    before = _groups(batches, 0)
    weights[...] = _pixel_weights(1)  # the dataset holds embed_fn, not a copy of W
    after = _groups(batches, 0)
    np.testing.assert_array_equal(before[:, 0], after[:, 0])
    assert not np.array_equal(before, after)
    features = dataset.image_array.reshape(N, -1)[:, 1:2].astype(np.float64)
    for group in after:
        np.testing.assert_array_equal(group[1:], _ref_neighbours(features, candidates, group[0], 4))


def test_keras_model_neighbours_follow_its_current_weights():
    dataset = _two_view_dataset()
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(1, use_bias=False)])
    model.layers[-1].kernel.assign(_pixel_weights(0))

    def embed(images):
        return model(images.astype(np.float32), training=False)

    batches, _ = _batches(dataset, embed)
    before = _groups(batches, 0)
    np.testing.assert_array_equal(before, _groups(_batches(dataset, _linear(_pixel_weights(0)))[0], 0))
    model.layers[-1].kernel.assign(_pixel_weights(1))
    after = _groups(batches, 0)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after[:, 0], before[:, 0])


def _counting_embed():
    """(embed_fn, the list of its call sizes, the plain linear embedding)."""
    calls = []
    linear = _linear(np.ones((SIZE * SIZE, 2), np.float32))

    def embed(images):
        calls.append(len(images))
        return linear(images)
    return embed, calls, linear


def test_embedding_is_chunked_and_batched():
    embed, calls, linear = _counting_embed()

    batches, _ = _batches(_dataset(), linear, max_embed_batch=7)
    batches.embed_fn = embed
    batches[0]
    assert calls and max(calls) <= 7 and sum(calls) <= 3 * (M + 1)


def test_construction_checks():
    dataset = _dataset()
    source = ImageSource(dataset)
    g = dataset.user_tags
    candidates = _candidates(source.get(np.arange(N)).reshape(N, -1), M)
    embed = _linear(np.ones((SIZE * SIZE, 2), np.float32))
    with pytest.raises(ValueError, match="--batch_size=10: must be a multiple of --group_size=4"):
        NeighbourBatches(source, g, candidates, embed, batch_size=10, group_size=4)
    with pytest.raises(ValueError, match="--group_size=10: must be smaller than --num_candidates=10"):
        NeighbourBatches(source, g, candidates, embed, batch_size=20, group_size=10)
    with pytest.raises(ValueError, match="39 rows.*N=40"):
        NeighbourBatches(source, g, candidates[:-1], embed, batch_size=8, group_size=4)
    wide = np.tile(np.arange(1, N + 1) % N, (N, 1))  # M = N candidates per image
    with pytest.raises(ValueError, match="M=40.*N=40"):
        NeighbourBatches(source, g, wide, embed, batch_size=8, group_size=4)
    with pytest.raises(ValueError, match="user_tags"):
        NeighbourBatches(source, scipy.sparse.csr_matrix(g[:-1]), candidates, embed)
    with pytest.raises(ValueError, match="own candidates"):
        NeighbourBatches(source, g, np.tile(np.arange(M), (N, 1)), embed, batch_size=8, group_size=4)
    batches = NeighbourBatches(source, g, candidates, embed, batch_size=8, group_size=4)
    with pytest.raises(IndexError):
        batches[len(batches)]


# --- the fast mode (embedding bank) ------------------------------------------

def _ref_fast_batch(bank, current, candidates, anchors, m, shortlist):
    """NumPy reference of one fast-mode batch.

    Without a shortlist the bank alone ranks; with one, the `shortlist`
    candidates nearest in the bank are ranked again by current features.
    """
    groups = []
    for anchor in anchors:
        z, features = candidates[anchor], bank
        if shortlist:
            order = np.argsort(((bank[z] - bank[anchor]) ** 2).sum(-1), kind="stable")
            z, features = z[np.sort(order[:shortlist])], current
        distances = ((features[z] - features[anchor]) ** 2).sum(-1)
        groups.append(np.concatenate([[anchor], z[np.argsort(distances, kind="stable")[:m - 1]]]))
    return np.concatenate(groups)


@pytest.mark.parametrize("shortlist", [0, 5, 7])
def test_fast_mode_matches_numpy_reference_with_a_stale_bank(shortlist):
    # Bank from pixel 0, network now embeds by pixel 1: every row is stale.
    dataset = _two_view_dataset()
    pixels = dataset.image_array.reshape(N, -1).astype(np.float64)
    stale, current = pixels[:, 0:1].copy(), pixels[:, 1:2]
    candidates = _candidates(stale, M)
    batches, _ = _batches(dataset, _linear(_pixel_weights(1)), candidates, bank=stale, shortlist=shortlist)
    exact, _ = _batches(dataset, _linear(_pixel_weights(1)), candidates)
    differs = 0
    for i in range(len(batches)):
        anchors = batches.anchor_order[(i * 3 + np.arange(3)) % N]
        expected = _ref_fast_batch(stale, current, candidates, anchors, 4, shortlist)
        images, user_tags, indices = batches[i]
        np.testing.assert_array_equal(indices, expected)
        np.testing.assert_array_equal(images[..., 0], dataset.image_array[indices])
        np.testing.assert_array_equal(user_tags, dataset.user_tags.toarray()[indices])
        differs += not np.array_equal(indices, exact.group_indices(i))
    np.testing.assert_array_equal(batches.bank, stale)  # selection never writes the bank
    assert differs  # a stale bank does change the groups


def test_fast_mode_with_a_current_bank_or_full_shortlist_is_exact():
    dataset, embed, candidates = _pixel_candidates_and_random_embedding()
    exact, _ = _batches(dataset, embed, candidates)
    current = embed(ImageSource(dataset).get(np.arange(N)))
    fresh, _ = _batches(dataset, embed, candidates, bank=current)
    stale_bank = np.zeros_like(current)
    full, _ = _batches(dataset, embed, candidates, bank=stale_bank, shortlist=M)
    refreshed, _ = _batches(dataset, embed, candidates, bank=stale_bank)
    calls = []
    refreshed.refresh_bank(progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(refreshed.bank, current)
    assert calls == [(N, N)]
    for i in range(len(exact)):
        expected = exact.group_indices(i)
        for fast in (fresh, full, refreshed):
            np.testing.assert_array_equal(fast.group_indices(i), expected)
    assert not stale_bank.any()  # the bank passed in is copied


def test_fast_mode_embeds_only_the_shortlist_and_its_anchors():
    embed, calls, linear = _counting_embed()

    bank = linear(ImageSource(_dataset()).get(np.arange(N)))
    batches, _ = _batches(_dataset(), embed, bank=bank)
    calls.clear()
    batches[0]
    assert calls == [] and batches.images_embedded == 0
    batches, _ = _batches(_dataset(), embed, bank=bank, shortlist=5)
    calls.clear()
    batches[0]
    assert 5 < sum(calls) <= 3 + 3 * 5 and batches.images_embedded == sum(calls)


def test_fast_mode_checks():
    dataset = _dataset()
    embed = _linear(np.ones((SIZE * SIZE, 2), np.float32))
    bank = np.zeros((N, 2))
    with pytest.raises(ValueError, match="bank must be N x d"):
        _batches(dataset, embed, bank=bank[:-1])
    with pytest.raises(ValueError, match=r"shortlist=2 .*\[3, 10\]"):
        _batches(dataset, embed, bank=bank, shortlist=2)
    with pytest.raises(ValueError, match=r"shortlist=11"):
        _batches(dataset, embed, bank=bank, shortlist=11)
    with pytest.raises(ValueError, match="needs a bank"):
        _batches(dataset, embed, shortlist=5)


def test_neighbour_recall():
    reference = np.array([0, 1, 2, 3, 10, 11, 12, 13])
    assert neighbour_recall(reference, reference, 4) == 1.0
    # Group 1 keeps 2 of 3 (order does not matter), group 2 keeps 0 of 3.
    assert neighbour_recall([0, 3, 1, 9, 10, 4, 5, 6], reference, 4) == pytest.approx((2 / 3 + 0) / 2)
    with pytest.raises(ValueError, match="different anchors"):
        neighbour_recall([1, 0, 2, 3, 10, 11, 12, 13], reference, 4)


def test_extrapolated_bank_follows_a_linear_drift():
    # Weights moving linearly in time: W(t) = W0 + t D. Refreshes at steps 0 and 10 give
    # the drift; at step 15 the extrapolated bank (c=1) is exactly the features under W(15).
    dataset = _dataset()
    rng = np.random.default_rng(5)
    w0 = rng.normal(size=(SIZE * SIZE, 3)).astype(np.float32)
    drift = rng.normal(size=(SIZE * SIZE, 3)).astype(np.float32) / 10
    weights = w0.copy()
    embed = _linear(weights)
    candidates = _candidates(dataset.image_array.reshape(N, -1), M)
    fast = {c: _batches(dataset, embed, candidates, bank=np.zeros((N, 3)), extrapolation=c)[0] for c in (0.0, 1.0)}
    for step in (0, 10):
        weights[...] = w0 + step * drift
        for batches in fast.values():
            batches.refresh_bank(step)
    weights[...] = w0 + 15 * drift
    exact, _ = _batches(dataset, embed, candidates)
    stale_differs = 0
    for i in range(len(exact)):
        expected = exact.group_indices(i)
        for batches in fast.values():
            batches.set_step(15)
        np.testing.assert_array_equal(fast[1.0].group_indices(i), expected)
        stale_differs += not np.array_equal(fast[0.0].group_indices(i), expected)
    assert stale_differs
    assert fast[0.0].drift is None and fast[1.0].bank_step == 10
    with pytest.raises(ValueError, match="extrapolation"):
        _batches(dataset, embed, candidates, bank=np.zeros((N, 3)), extrapolation=-1)


@pytest.mark.parametrize("fast", [False, True])
def test_a_keras_pydataset_read_in_two_parts(fast):
    dataset, embed, candidates = _pixel_candidates_and_random_embedding()
    kwargs = dict(bank=embed(ImageSource(dataset).get(np.arange(N))), shortlist=5) if fast else {}
    batches, _ = _batches(dataset, embed, candidates, seed=3, **kwargs)
    assert isinstance(batches, keras.utils.PyDataset)
    first = [batches[i] for i in range(len(batches))]
    batches.on_epoch_end()
    assert batches.epoch == 1
    second = [batches[i] for i in range(len(batches))]
    assert not np.array_equal(first[0][2], second[0][2])
    # prepare (any epoch, e.g. read ahead from another thread) then finish gives the same batch.
    for epoch, expected in ((0, first), (1, second)):
        for i in (0, len(batches) - 1):
            got = batches.finish(batches.prepare(i, epoch))
            for a, b in zip(got, expected[i]):
                np.testing.assert_array_equal(a, b)
    # The images are those of the chosen indices, and the user tags their rows of G.
    images, user_tags, indices = second[2]
    np.testing.assert_array_equal(images, ImageSource(dataset).get(indices))
    np.testing.assert_array_equal(user_tags, dataset.user_tags[indices].toarray())
