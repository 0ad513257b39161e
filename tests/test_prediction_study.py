"""Table 5 of Schelldorfer, Bühlmann & van de Geer (2011) at reduced size: the P designs' generator
and the paper's finding that within-group prediction with BLUPs beats the Lasso as θ² grows."""

import numpy as np
import pytest

import jaxlmm
from jaxlmm import simulate


def test_prediction_design():
    """25 clusters of 6 training rows and 50 test rows each, sharing the random effects; β and Ψ
    as in §5.2; the test rows' y has the model's conditional mean given b_i."""
    train, test = simulate.schelldorfer_prediction_design(0, p=10, theta2=2.0)
    assert train.X.shape == (150, 9) and test.X.shape == (1250, 9)
    np.testing.assert_array_equal(train.ranef, test.ranef)
    np.testing.assert_array_equal(train.beta[:5], [1.5, 1.2, 1.0, 2.0, 0.0])
    np.testing.assert_array_equal(train.Psi, 2.0 * np.eye(3))
    np.testing.assert_array_equal(test.Z, np.column_stack([np.ones(1250), test.X[:, :2]]))
    noise = test.y - 1.0 - test.X @ test.beta - np.sum(test.Z * test.ranef[test.groups], axis=1)
    assert abs(noise.mean()) < 5 * 1 / np.sqrt(1250) and abs(noise.var() - 1.0) < 0.15
    with pytest.raises(ValueError, match="`theta2`"):
        simulate.schelldorfer_prediction_design(0, theta2=-1.0)
    with pytest.raises(ValueError, match="`p`"):
        simulate.schelldorfer_prediction_design(0, p=3)


@pytest.mark.slow
def test_blups_beat_the_lasso_at_large_theta():
    """P1 with θ² = 2, two replicates: ignoring the grouping, the Lasso's squared prediction
    error cannot fall below σ² + E(z_tᵀb_i)² ≈ 1 + 3θ² = 7, while lmmLasso's BLUPs recover most
    of z_tᵀb_i (paper: 1.67 against 5.92). Asserted: lmmLasso below half the Lasso's error, the
    Lasso above 1 + the test rows' own mean of (z_tᵀb_i)² less 20%."""
    for seed in (0, 1):
        train, test = simulate.schelldorfer_prediction_design(seed, p=10, theta2=2.0)
        data = jaxlmm.LMMData.from_arrays(train.X, train.y, train.groups, train.Z)
        mixed = jaxlmm.fit_lmmlasso(data)
        lasso = jaxlmm.fit_lmmlasso(data, structure="none")
        mspe_mixed = np.mean((test.y - mixed.predict(test.X, test.groups, test.Z)) ** 2)
        mspe_lasso = np.mean((test.y - lasso.predict(test.X)) ** 2)
        floor = 1.0 + np.mean(np.sum(test.Z * test.ranef[test.groups], axis=1) ** 2)
        assert mspe_mixed < 0.5 * mspe_lasso
        assert mspe_lasso > 0.8 * floor
