"""BayesRouterSelector: priors from labelled contexts, then LinTS, checked against direct algebra.

The registry contract (state round trip, masking, batching, add_arm) runs on it unfitted through
tests/bandits/test_selector_contract.py, which is parametrised over SELECTORS.
"""

import io

import numpy as np
import pytest

from laser.bandits import SELECTORS, BayesRouterSelector, LinTS, make_selector

K, D = 3, 6


def _domains(rng, n):
    """Contexts of three domains (a shifted one-hot centre plus noise) and each one's domain."""
    dom = rng.integers(0, K, size=n)
    ctx = np.eye(K, D)[dom] * 3.0 + 1.0 + rng.normal(0, 0.3, size=(n, D))
    return ctx, dom


def _roundtrip(sd):
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        return dict(f)


def test_registered_and_built_by_name():
    assert SELECTORS["bayes_router"] is BayesRouterSelector
    sel = make_selector("bayes_router", K, D, 0, prior_strength=0.5, ridge=2.0)
    assert (sel.prior_strength, sel.ridge, sel.fitted_) == (0.5, 2.0, False)


def test_labelled_priors_make_the_first_selections_right_where_lints_starts_at_chance():
    """Domain k's prompts are best served by RM k. With priors fitted on 150 labelled contexts the
    very first 90 selections (no bandit update yet) pick the right RM; plain LinTS, whose arms all
    start at N(0, v^2 I), picks at chance (1/3; 60% is 4.6 binomial sds above it)."""
    rng = np.random.default_rng(0)
    X, y = _domains(rng, 150)
    routed = BayesRouterSelector.from_labelled(X, y, K, seed=1)
    plain = LinTS(K, D, seed=1)
    C, truth = _domains(rng, 90)
    assert np.mean(routed.select_batch(C) == truth) >= 0.95
    assert np.mean(plain.select_batch(C) == truth) <= 0.6
    assert routed.label_counts_.sum() == 150 and routed.fitted_


def test_prior_is_the_ridge_regression_posterior():
    """m0_k solves min ||F w - 1[y = k]||^2 + ridge ||w||^2: computed here by least squares on the
    augmented system [F; sqrt(ridge) I] w = [t; 0] (no normal equations); the prior precision is
    prior_strength (ridge I + F^T F), so A_0^-1 is its inverse."""
    rng = np.random.default_rng(1)
    X, y = _domains(rng, 40)
    sel = BayesRouterSelector(K, D, ridge=2.0, prior_strength=0.25).fit(X, y)
    aug = np.vstack([X, np.sqrt(2.0) * np.eye(D)])
    for k in range(K):
        w = np.linalg.lstsq(aug, np.concatenate([(y == k).astype(float), np.zeros(D)]), rcond=None)[0]
        np.testing.assert_allclose(sel.theta_[k], w, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(np.linalg.inv(sel.A_inv(k)), 0.25 * (2.0 * np.eye(D) + X.T @ X), rtol=1e-9)


def test_posterior_after_updates_is_bayesian_linear_regression_with_that_prior():
    """After fit and 40 bandit updates, arm k's posterior mean and precision are the conjugate
    update written out: A = P0 + sum f f^T, mu = A^-1 (P0 m0 + sum r f), with m0 = (ridge I +
    F^T F)^-1 F^T 1[y = k] and P0 = s (ridge I + F^T F), all computed here with np.linalg.solve."""
    rng = np.random.default_rng(2)
    X, y = _domains(rng, 60)
    s, lam = 0.5, 1.5
    sel = BayesRouterSelector(K, D, ridge=lam, prior_strength=s, seed=3).fit(X, y)
    C, _ = _domains(rng, 40)
    arms = sel.select_batch(C)
    rewards = rng.uniform(size=40)
    sel.update_batch(arms, C, rewards)
    G = lam * np.eye(D) + X.T @ X
    for k in range(K):
        m0 = np.linalg.solve(G, X.T @ (y == k).astype(float))
        mine = arms == k
        A = s * G + C[mine].T @ C[mine]
        mu = np.linalg.solve(A, s * G @ m0 + C[mine].T @ rewards[mine])
        np.testing.assert_allclose(sel.theta_[k], mu, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sel.A_inv(k), np.linalg.inv(A), rtol=1e-8, atol=1e-12)
    assert sel.counts_.sum() == 40


def test_fitted_state_round_trips_exactly():
    """Fit, 30 interleaved steps, save through npz (no pickle), load into a fresh unfitted object:
    the priors, counts and RNG come back and the next 100 decisions (with updates) are equal."""
    rng = np.random.default_rng(4)
    X, y = _domains(rng, 50)
    a = BayesRouterSelector(K, D, seed=5, prior_strength=0.3).fit(X, y)

    def drive(sel, r, n):
        out = []
        for _ in range(n):
            c, dom = _domains(r, 1)
            k = sel.select(c[0])
            sel.update(k, c[0], float(k == dom[0]))
            out.append(k)
        return out

    drive(a, np.random.default_rng(6), 30)
    sd = _roundtrip(a.state_dict())
    b = BayesRouterSelector(K, D, seed=5, prior_strength=0.3)
    b.load_state_dict(sd)
    assert b.fitted_ and np.array_equal(b.label_counts_, a.label_counts_)
    assert drive(a, np.random.default_rng(7), 100) == drive(b, np.random.default_rng(7), 100)
    with pytest.raises(ValueError, match="prior_strength"):
        BayesRouterSelector(K, D, seed=5, prior_strength=1.0).load_state_dict(sd)


def test_added_arm_gets_the_shared_prior_and_masking_holds():
    rng = np.random.default_rng(8)
    X, y = _domains(rng, 50)
    sel = BayesRouterSelector(K, D).fit(X, y)
    assert sel.add_arm() == K and sel.label_counts_.tolist()[-1] == 0
    np.testing.assert_array_equal(sel.theta_[K], np.zeros(D))
    sel.mask_arm(0)
    C, _ = _domains(rng, 30)
    assert (sel.select_batch(C) != 0).all()


def test_fit_errors_are_clear():
    rng = np.random.default_rng(9)
    X, y = _domains(rng, 10)
    with pytest.raises(ValueError, match=r"labels must be arm indices in \[0, 3\)"):
        BayesRouterSelector(K, D).fit(X, np.full(10, 3))
    with pytest.raises(ValueError, match="M labels"):
        BayesRouterSelector(K, D).fit(X, y[:5])
    with pytest.raises(ValueError, match=r"contexts must have shape \(B, 6\)"):
        BayesRouterSelector(K, D).fit(X[:, :4], y)
    sel = BayesRouterSelector(K, D)
    sel.update(1, X[0], 0.5)
    with pytest.raises(ValueError, match="fit the priors before training"):
        sel.fit(X, y)
    with pytest.raises(ValueError, match="prior_strength and ridge must be > 0"):
        BayesRouterSelector(K, D, ridge=0.0)
