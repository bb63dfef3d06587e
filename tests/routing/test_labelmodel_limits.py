"""What no label-free rule can see, and what a few labelled pairs fix.

Two worlds with the same second moments of the votes (derivation below): in world A three
independent RMs are accurate and the anchor is weak; in world B the three share one error
component and the anchor is the most accurate. The label model, which reads the votes' second
moments, gives the same estimates in both, so in world B it trusts a wrong RM; labelled pairs veto
that pick (:func:`laser.routing.labelfit.fit_label_model`, the ``labelled`` argument) and the
router falls back to the anchor.

World B (RMs 0-2 the clique, RM 3 the anchor, RM 4 pure noise): each clique RM copies a shared
vote ``s`` with probability ``lam`` and otherwise votes independently with ``E[u y] = mu0``; ``s``
is independent of the truth (``E[s y] = 0``). So a clique RM's ``mu = E[v y] = (1 - lam) mu0``,
two clique RMs agree ``E[v_i v_j] = lam^2 + (1 - lam)^2 mu0^2`` (``E[s u] = 0``), and
``E[v_i v_anchor] = mu mu_anchor``. With lam = 0.6, mu0 = 0.8, mu_anchor = 0.7:
``mu = 0.32``, ``E[v_i v_j] = 0.36 + 0.1024 = 0.4624 = 0.68^2``, ``E[v_i v_a] = 0.224``.
World A (independent one-coin RMs): clique RMs with ``mu = 0.68`` and an anchor with
``mu = 0.224 / 0.68 = 0.3294`` give exactly the same second moments; RM 4 at chance in both.
Accuracies ``(1 + mu) / 2``: A = (0.84, 0.84, 0.84, 0.665, 0.5), B = (0.66, 0.66, 0.66, 0.85, 0.5).
"""

import numpy as np

from laser.routing.labelfit import fit_label_model
from laser.routing.labelmodel import second_moments
from laser.routing.reliability import ReliabilityRouter

M = 40_000
LAM, MU0, MU_ANCHOR_B = 0.6, 0.8, 0.7
MU_CLIQUE_A, MU_ANCHOR_A = 0.68, 0.224 / 0.68


def one_coin(rng, mu, y):
    return np.where(rng.random(len(y)) < (1 + mu) / 2, y, -y)


def world_a(rng):
    y = rng.choice([-1, 1], M)
    v = [one_coin(rng, MU_CLIQUE_A, y) for _ in range(3)] + [one_coin(rng, MU_ANCHOR_A, y), one_coin(rng, 0.0, y)]
    return np.array(v, np.int8), y


def world_b(rng):
    y = rng.choice([-1, 1], M)
    s = rng.choice([-1, 1], M)  # the shared error: independent of the truth
    clique = [np.where(rng.random(M) < LAM, s, one_coin(rng, MU0, y)) for _ in range(3)]
    v = clique + [one_coin(rng, MU_ANCHOR_B, y), one_coin(rng, 0.0, y)]
    return np.array(v, np.int8), y


def gold_acc(v, y):
    return (v == y[None, :]).mean(axis=1)


def test_the_two_worlds_have_the_same_second_moments_and_the_same_fit():
    va, ya = world_a(np.random.default_rng(0))
    vb, yb = world_b(np.random.default_rng(1))
    qa, qb = second_moments(va)[0], second_moments(vb)[0]
    np.testing.assert_allclose(qa, qb, atol=0.02)  # sampling error of a mean of 40k +-1 products: ~0.005
    np.testing.assert_allclose(gold_acc(va, ya), [0.84, 0.84, 0.84, 0.665, 0.5], atol=0.01)
    np.testing.assert_allclose(gold_acc(vb, yb), [0.66, 0.66, 0.66, 0.85, 0.5], atol=0.01)
    fa, fb = fit_label_model(va, anchor=3), fit_label_model(vb, anchor=3)
    np.testing.assert_allclose(fa.acc, fb.acc, atol=0.02)
    assert fa.ok and fb.ok  # the votes are explained in both worlds: nothing to detect
    assert fa.ranking()[0] in (0, 1, 2) and fb.ranking()[0] in (0, 1, 2)  # right in A, wrong in B


def labelled_from(v, y, n, rng):
    """n labelled pairs: the votes oriented with the preferred response first (label +1)."""
    idx = rng.choice(len(y), n, replace=False)
    return v[:, idx] * y[idx][None, :], np.ones(n)


def test_labelled_pairs_veto_the_wrong_pick_in_world_b_and_keep_the_right_one_in_world_a():
    """40 labelled pairs: in B the anchor is right on 85% and the pick on 66%, so of the pairs
    where exactly one is right the anchor wins the majority; in A the pick (84%) beats the
    anchor (66.5%)."""
    va, ya = world_a(np.random.default_rng(0))
    vb, yb = world_b(np.random.default_rng(1))
    fb = fit_label_model(vb, anchor=3, labelled=labelled_from(vb, yb, 40, np.random.default_rng(2)))
    assert not fb.ok and "labelled pairs contradict the fit" in fb.reason
    assert fb.labelled_right[3] > fb.labelled_right[fb.ranking()[0]]
    fa = fit_label_model(va, anchor=3, labelled=labelled_from(va, ya, 40, np.random.default_rng(2)))
    assert fa.ok and fa.ranking()[0] in (0, 1, 2)


def test_without_an_anchor_the_comparator_is_the_rm_best_on_the_labelled_pairs():
    vb, yb = world_b(np.random.default_rng(1))
    res = fit_label_model(vb, labelled=labelled_from(vb, yb, 40, np.random.default_rng(3)))
    assert res.sign_source == "labels" and not res.ok
    assert int(np.argmax(res.labelled_right)) == 3 and "RM 3 (the RM best on labelled pairs)" in res.reason


def test_the_router_routes_world_b_to_the_anchor_once_labelled_pairs_are_given():
    vb, yb = world_b(np.random.default_rng(1))
    r = ReliabilityRouter(5, anchor=None, window=M, seed=0)
    for start in range(0, 4000, 40):  # 100 probe prompts of 40 pairs
        r.observe("g", vb[:, start : start + 40])
    assert r.refit("g").ok and r.best("g")[0] in (0, 1, 2)  # label-free: a clique RM is trusted
    r.add_labelled("g", labelled_from(vb, yb, 40, np.random.default_rng(4))[0])
    st = r.refit("g")
    assert not st.ok and r.best("g") == (3, f"fallback: {st.reason}")


def test_two_informative_rms_are_reported_as_not_identified():
    """RMs 0 and 1 carry signal (accuracy 0.85, 0.75), RMs 2-4 vote at chance: only
    ``Q_01 = mu_0 mu_1`` differs from 0, so the split of that product between the two is a guess.
    With a third informative RM (accuracy 0.7) the order is seen through it."""
    rng = np.random.default_rng(5)
    y = rng.choice([-1, 1], 3000)
    clusters = np.repeat(np.arange(100), 30)
    two = np.array([one_coin(rng, mu, y) for mu in (0.7, 0.5, 0.0, 0.0, 0.0)], np.int8)
    res = fit_label_model(two, clusters)
    assert res.ok and not res.identified and "order is not identified" in res.note
    assert set(res.ranking()[:2]) == {0, 1}
    three = np.array([one_coin(rng, mu, y) for mu in (0.7, 0.5, 0.4, 0.0, 0.0)], np.int8)
    res3 = fit_label_model(three, clusters)
    assert res3.identified and res3.note == "" and res3.ranking()[0] == 0
    r = ReliabilityRouter(5, seed=0)
    for start in range(0, 3000, 30):
        r.observe("g", two[:, start : start + 30])
    assert "order is not identified" in r.refit("g").note and r.best("g")[1] == "estimate"
