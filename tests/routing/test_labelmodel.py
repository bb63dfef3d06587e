"""The label model (laser.routing.labelmodel, laser.routing.labelfit): hand-derived numbers, an outside implementation
(crowd-kit's one-coin Dawid-Skene), and the negative controls (shared errors, a duplicate RM,
too few RMs, an anchor at chance)."""

import numpy as np
import pytest

from laser.routing.labelfit import fit_label_model
from laser.routing.labelmodel import check_votes, moment_se, one_coin_em, rank_one_fit, second_moments


def simulate(rng, acc, m, abstain=0.1):
    """Votes of independent one-coin RMs on m pairs with true preference y (+-1)."""
    y = rng.choice([-1, 1], m)
    v = np.where(rng.random((len(acc), m)) < np.asarray(acc)[:, None], y, -y)
    v[rng.random(v.shape) < abstain] = 0
    return v.astype(np.int8), y


def tiny_votes():
    """16 pairs, 3 RMs: RM1 always +1 (the truth), RM0 -1 on pairs {0,1,2,3}, RM2 -1 on {3,4,5,6}."""
    v = np.ones((3, 16), np.int8)
    v[0, [0, 1, 2, 3]] = -1
    v[2, [3, 4, 5, 6]] = -1
    return v


def test_golden_three_rms():
    """Hand derivation on :func:`tiny_votes`:
    Q01 = (12 - 4) / 16 = 0.5, Q12 = 0.5, and RM0/RM2 disagree on {0,1,2,4,5,6} (6 pairs), so
    Q02 = (10 - 6) / 16 = 0.25. With three RMs the rank-one fit is exact:
    mu0^2 = Q01 Q02 / Q12 = 0.25, mu1^2 = Q01 Q12 / Q02 = 1, mu2^2 = Q02 Q12 / Q01 = 0.25,
    so acc = (1 + mu) / 2 = (0.75, 1.0, 0.75) with the anchor (RM0) positive."""
    q, n = second_moments(tiny_votes())
    assert q[0, 1] == 0.5 and q[1, 2] == 0.5 and q[0, 2] == 0.25 and (n == 16).all()
    res = fit_label_model(tiny_votes(), anchor=0, min_votes=1)
    np.testing.assert_allclose(res.acc, [0.75, 1.0, 0.75], atol=1e-8)
    assert res.sign_source == "anchor" and res.ok and res.gof["df"] == 0  # three RMs: exactly identified
    # the same votes mirrored: the anchor flips the sign back
    mirrored = fit_label_model(-tiny_votes(), anchor=0, min_votes=1)
    np.testing.assert_allclose(mirrored.acc, [0.75, 1.0, 0.75], atol=1e-8)


def test_iid_standard_error_golden():
    """se_ij = sqrt((1 - Q^2) / N): on tiny_votes Q01 = 0.5, N = 16 -> sqrt(0.75 / 16) = 0.2165."""
    v = tiny_votes()
    q, n = second_moments(v)
    assert moment_se(v, q, n)[0, 1] == pytest.approx(np.sqrt(0.75 / 16))


def test_cluster_robust_se_is_larger_when_pairs_of_a_prompt_move_together():
    """Duplicating each pair 8 times inside one cluster leaves Q unchanged; the iid se shrinks by
    sqrt(8), the cluster-robust se (clusters = the original pairs) does not shrink."""
    rng = np.random.default_rng(0)
    v, _ = simulate(rng, [0.8, 0.7, 0.6], 200, abstain=0.0)
    rep = np.repeat(v, 8, axis=1)
    q1, n1 = second_moments(v)
    q8, n8 = second_moments(rep)
    np.testing.assert_allclose(q1, q8)
    iid = moment_se(rep, q8, n8)[0, 1]
    robust = moment_se(rep, q8, n8, clusters=np.repeat(np.arange(200), 8))[0, 1]
    assert iid == pytest.approx(moment_se(v, q1, n1)[0, 1] / np.sqrt(8), rel=1e-9)
    assert robust == pytest.approx(moment_se(v, q1, n1)[0, 1] * np.sqrt(200 / 199), rel=0.05)


@pytest.mark.parametrize("seed", [0])
def test_em_matches_crowdkit_one_coin_dawid_skene(seed):
    """One-coin Dawid-Skene EM (class prior estimated, as crowd-kit does) against crowd-kit's
    OneCoinDawidSkene on 2000 synthetic pairs, both run to convergence (crowd-kit's default stop on
    a small ELBO gain ends earlier, 0.01 away; ``tol=-1`` runs all its iterations): equal within
    1e-3; the spectral and EM estimates close to the realised accuracies (sampling error only)."""
    pd = pytest.importorskip("pandas")
    crowdkit = pytest.importorskip("crowdkit.aggregation")
    rng = np.random.default_rng(seed)
    acc = np.array([0.9, 0.75, 0.65, 0.6, 0.55])
    v, y = simulate(rng, acc, 2000)
    rows = [(m, k, int(v[k, m] > 0)) for k in range(5) for m in range(v.shape[1]) if v[k, m] != 0]
    ck = crowdkit.OneCoinDawidSkene(n_iter=100, tol=-1).fit(pd.DataFrame(rows, columns=["task", "worker", "label"]))
    ours, _ = one_coin_em(v, fit_label_model(v).acc, iters=500, tol=1e-12, estimate_prior=True)
    np.testing.assert_allclose(ours, ck.skills_.sort_index().to_numpy(), atol=1e-3)
    spectral = fit_label_model(v, anchor=0).acc
    realised = [(v[k] == y)[v[k] != 0].mean() for k in range(5)]
    np.testing.assert_allclose(spectral, realised, atol=0.04)
    np.testing.assert_allclose(ours, realised, atol=0.03)


def test_mirrored_experts_need_the_anchor():
    """Two mirrored experts (0.95 and 0.05) plus a weak generalist and two chance RMs: the
    label-free majority rule can pick either expert, the anchor (generalist) picks the right one."""
    rng = np.random.default_rng(4)
    acc = [0.05, 0.95, 0.65, 0.4, 0.35]  # sum of mu = -0.9 + 0.9 + 0.3 - 0.2 - 0.3 = -0.2 < 0
    v, _ = simulate(rng, acc, 1500)
    anchored = fit_label_model(v, anchor=2)
    assert anchored.ranking()[0] == 1 and anchored.sign_source == "anchor"
    majority = fit_label_model(v)
    assert majority.sign_source == "majority" and majority.ranking()[0] == 0  # the label-free rule fails here
    labelled = fit_label_model(v, labelled=(v[:, :5], _[:5]))
    assert labelled.sign_source == "labels" and labelled.ranking()[0] == 1


def test_anchor_at_chance_does_not_fix_the_sign():
    """An anchor with accuracy 0.5: the sign is not identified -> not ok, unless a previous fit says it."""
    rng = np.random.default_rng(5)
    v, _ = simulate(rng, [0.9, 0.1, 0.5, 0.8, 0.7], 1500)
    res = fit_label_model(v, anchor=2)
    assert not res.ok and "near chance" in res.reason
    prev = np.array([0.8, -0.8, 0.0, 0.6, 0.4])
    cont = fit_label_model(v, anchor=2, previous=prev)
    assert cont.ok and cont.sign_source == "continuity" and cont.ranking()[0] == 0


def test_near_duplicate_rm_is_detected_and_estimated_against_the_others():
    """RM5 copies RM2 (0.72) with 5% of votes flipped: it agrees with RM2 far above 0.44^2. It is
    dropped from the fit (twin of 2), the other estimates are those of the fit without it, and its
    own estimate comes from the RMs other than its twin."""
    rng = np.random.default_rng(0)
    acc = [0.9, 0.1, 0.72, 0.55, 0.5]
    v, y = simulate(rng, acc, 1500)
    dup = np.where(rng.random(v.shape[1]) < 0.95, v[2], -v[2])
    with_dup = fit_label_model(np.vstack([v, dup]), anchor=0)
    assert with_dup.twins == {5: 2} and with_dup.ok
    alone = fit_label_model(v, anchor=0)
    np.testing.assert_allclose(with_dup.acc[:5], alone.acc, atol=1e-9)
    assert with_dup.acc[5] == pytest.approx(0.95 * 0.72 + 0.05 * 0.28, abs=0.04)
    # negative control: independent RMs, no duplicate found
    assert alone.twins == {}


def test_shared_error_component_is_flagged():
    """Five RMs; on 35% of the pairs a shared factor (e.g. a length bias) drives RMs 2, 3 and 4
    the wrong way together (each with prob. 0.85). The votes are no longer rank one: the model
    reports the group instead of returning a ranking (ok=False). Independent RMs with the same
    marginal accuracies pass the check (negative control)."""
    rng = np.random.default_rng(1)
    m, acc = 2000, np.array([0.85, 0.15, 0.75, 0.7, 0.65])
    v, y = simulate(rng, acc, m)
    shared = rng.random(m) < 0.35
    for k in (2, 3, 4):
        follow = shared & (rng.random(m) < 0.85) & (v[k] != 0)
        v[k, follow] = -y[follow]
    res = fit_label_model(v, anchor=0)
    assert not res.ok and ("shared" in res.reason)
    marginal = [(v[k] == y)[v[k] != 0].mean() for k in range(5)]
    control, _ = simulate(np.random.default_rng(2), marginal, m)
    assert fit_label_model(control, anchor=0).ok


def test_fewer_than_three_usable_rms_is_refused():
    rng = np.random.default_rng(0)
    v, _ = simulate(rng, [0.9, 0.8], 500)
    with pytest.raises(ValueError, match="at least three usable RMs"):
        fit_label_model(v)
    v3, _ = simulate(rng, [0.9, 0.8, 0.7], 500)
    v3[2] = 0  # an RM that always ties abstains: not usable
    with pytest.raises(ValueError, match="RM 2: 0 votes"):
        fit_label_model(v3)


def test_bad_votes_are_refused():
    with pytest.raises(ValueError, match="values must be -1, 0"):
        check_votes([[1, 2, 0]])
    with pytest.raises(ValueError, match="expected a \\(K, M\\)"):
        check_votes([1, 0, -1])
    with pytest.raises(ValueError, match="'spectral' or 'em'"):
        fit_label_model(tiny_votes(), method="bogus", min_votes=1)


def test_rank_one_fit_recovers_an_exact_rank_one_matrix():
    """Q = mu mu^T off the diagonal (any N): the fit returns mu up to its sign."""
    mu = np.array([0.9, -0.6, 0.3, 0.5, -0.2])
    q = np.outer(mu, mu)
    np.fill_diagonal(q, 1.0)
    fit = rank_one_fit(q, np.full((5, 5), 100.0))
    fit = fit if fit[0] > 0 else -fit
    np.testing.assert_allclose(fit, mu, atol=1e-6)
