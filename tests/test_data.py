import numpy as np
import pytest
from helpers import random_grouped

import jaxlmm


def test_rows_sorted_by_cluster_and_restorable():
    X, y, groups, Z = random_grouped(0, [3, 1, 5, 2], label_type=str)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    assert data.n_clusters == 4 and data.n_obs == 11 and data.n_features == 6
    assert np.all(np.diff(np.asarray(data.cluster)) >= 0)
    np.testing.assert_array_equal(np.asarray(data.X), X[np.asarray(data.order)])
    np.testing.assert_array_equal(np.asarray(data.to_caller_order(data.y)), y)
    assert data.labels == ("g000", "g001", "g002", "g003")
    np.testing.assert_array_equal(np.asarray(data.cluster_sizes), [3, 1, 5, 2])


@pytest.mark.parametrize("label_type", [int, str, tuple])
def test_any_hashable_labels(label_type):
    X, y, groups, Z = random_grouped(1, [2, 4, 3], label_type=label_type)
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    assert data.n_clusters == 3
    for t, label in enumerate(groups):
        row = int(np.flatnonzero(np.asarray(data.order) == t)[0])
        assert data.labels[int(data.cluster[row])] == label


def test_mixed_unsortable_labels_keep_first_appearance():
    X, y, _, Z = random_grouped(2, [2, 2, 2])
    groups = ["b", 1, "b", 1, (0,), (0,)]
    data = jaxlmm.LMMData.from_arrays(X, y, groups, Z)
    assert data.labels == ("b", 1, (0,))


def test_default_z_is_random_intercept():
    X, y, groups, _ = random_grouped(3, [2, 3])
    data = jaxlmm.LMMData.from_arrays(X, y, groups)
    np.testing.assert_array_equal(np.asarray(data.Z), np.ones((5, 1)))


def test_respects_float32():
    X, y, groups, Z = random_grouped(4, [3, 3])
    data = jaxlmm.LMMData.from_arrays(X.astype(np.float32), y.astype(np.float32), groups,
                                      Z.astype(np.float32))
    assert data.X.dtype == np.float32 and data.z_basis.dtype == np.float32


BAD = [
    (dict(X=np.ones((5, 2)), y=np.arange(4.0)), "`X` has 5 rows"),
    (dict(y=np.ones(6)), "`y` is constant"),
    (dict(X=np.ones(6)), "`X` must be a 2-D"),
    (dict(Z=np.ones(6)), "`Z` must be a 2-D"),
    (dict(Z=np.ones((5, 1))), "`Z` has 5 rows"),
    (dict(groups=[0] * 6), "at least 2"),
    (dict(groups=[0, 1, 0]), "`groups` has 3 labels"),
    (dict(y=np.array([1.0, np.nan, 2, 3, 4, 5])), "`y` must be real and finite"),
    (dict(X=np.array([[1.0, np.inf]] * 6)), "`X` contains NaN or inf"),
    (dict(Z=np.array([[1.0, np.nan]] * 6)), "`Z` contains NaN or inf"),
    (dict(groups=[0, 1, 0, 1, None, 1]), "`groups` contains None"),
    (dict(Z=np.column_stack([np.arange(6.0), 2 * np.arange(6.0)])), "`Z` is singular"),
    (dict(y=np.ones((6, 2))), "`y` must be a 1-D"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_inputs_raise(override, message):
    rng = np.random.default_rng(0)
    kwargs = dict(X=rng.normal(size=(6, 2)), y=rng.normal(size=6), groups=[0, 1, 0, 1, 0, 1],
                  Z=None)
    kwargs.update(override)
    with pytest.raises(ValueError, match=message):
        jaxlmm.LMMData.from_arrays(**kwargs)
