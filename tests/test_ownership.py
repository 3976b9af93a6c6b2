"""Pure ownership math: masks, exact prune counts, deterministic ties."""

import numpy as np
import pytest

from packnet_tf.layers import ownership

OWNER = np.array([[0, 1, 2], [3, 1, 0]], dtype=np.uint8)


def test_visible_mask_sees_tasks_up_to_t():
    got = ownership.visible_mask(OWNER, 2).numpy()
    np.testing.assert_array_equal(got, [[False, True, True],
                                        [False, True, False]])


def test_trainable_mask_is_own_weights_only():
    got = ownership.trainable_mask(OWNER, 1).numpy()
    np.testing.assert_array_equal(got, [[False, True, False],
                                        [False, True, False]])


def test_claim_free_takes_only_free_weights():
    got = ownership.claim_free(OWNER, 4).numpy()
    np.testing.assert_array_equal(got, [[4, 1, 2], [3, 1, 4]])
    assert got.dtype == np.uint8


@pytest.mark.parametrize("fraction, expected", [
    (0.0, 0), (0.5, 50), (0.75, 75), (0.333, 33), (0.999, 100)])
def test_count_to_free(fraction, expected):
    assert ownership.count_to_free(100, fraction) == expected


@pytest.mark.parametrize("n, sparsity, expected", [
    (100, 0.5, 50), (100, 0.999, 1), (0, 0.5, 0), (7, 0.0, 7)])
def test_count_to_keep_follows_tfmot(n, sparsity, expected):
    assert ownership.count_to_keep(n, sparsity) == expected


def test_prune_frees_exactly_the_smallest_owned():
    rng = np.random.default_rng(0)
    weights = rng.permutation(np.linspace(-1.0, 1.0, 40)).reshape(5, 8)
    owner = np.where(rng.random((5, 8)) < 0.5, 1, 2).astype(np.uint8)
    owned = owner == 2
    new = ownership.prune_owner(weights, owner, 2, 7).numpy()
    freed = (owner == 2) & (new == 0)
    assert freed.sum() == 7
    # The freed ones are the 7 smallest |w| among task 2's.
    cutoff = np.sort(np.abs(weights[owned]))[6]
    np.testing.assert_array_equal(
        freed, owned & (np.abs(weights) <= cutoff))
    # Nobody else's weights change hands.
    np.testing.assert_array_equal(new[~freed], owner[~freed])


def test_prune_breaks_ties_by_position():
    weights = np.ones((3, 4), dtype=np.float32)
    owner = np.ones((3, 4), dtype=np.uint8)
    new = ownership.prune_owner(weights, owner, 1, 5).numpy().ravel()
    np.testing.assert_array_equal(new, [0] * 5 + [1] * 7)


def test_prune_rejects_more_than_owned():
    with pytest.raises(ValueError, match=r"num_to_free.*\[0, 2\]"):
        ownership.prune_owner(np.ones(3), np.array([1, 1, 2], np.uint8), 1, 3)


def test_owner_counts():
    np.testing.assert_array_equal(ownership.owner_counts(OWNER, 4),
                                  [2, 2, 1, 1])
