"""The other routers of `laser compare` (methods.OTHER_ROUTERS): online ensemble, classifier selection, bandit
variants as LASeR's selector."""

import io
import math

import numpy as np
import pytest

from laser.bandits import make_selector
from laser.bandits.classifier import ClassifierSelector
from laser.bandits.online_ensemble import OnlineEnsemble, pair_agreement
from laser.bench.compare.labels import margin_labels
from laser.bench.compare.methods import check_method, default_methods, selects_arms


def _savez_round_trip(sd: dict) -> dict:
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------- online ensemble
def test_online_ensemble_update_by_hand():
    """K = 3, eta = 0.5, rewards (1, 0, NaN): log-weights become (0.5, 0, 0), so
    w = (e^0.5, 1, 1) / (e^0.5 + 2) = (0.451863, 0.274068, 0.274068); the NaN arm keeps its
    weight and is not counted. A second update (0, 1, 1) gives log-weights (0.5, 0.5, 0.5): uniform."""
    ens = OnlineEnsemble(3, eta=0.5)
    assert np.allclose(ens.weights(), 1 / 3)
    ens.update([1.0, 0.0, np.nan])
    e = math.exp(0.5)
    assert np.allclose(ens.weights(), [e / (e + 2), 1 / (e + 2), 1 / (e + 2)], rtol=1e-12)
    assert ens.weights() == pytest.approx([0.451863, 0.274068, 0.274068], abs=1e-6)
    assert ens.counts_.tolist() == [1, 1, 0]
    ens.update([0.0, 1.0, 1.0])
    assert np.allclose(ens.weights(), 1 / 3) and abs(ens.weights().sum() - 1) < 1e-15


def test_online_ensemble_combine_nan_aware():
    """Uniform weights: column 0 is scored by RMs 0 and 1 only -> (1 + 3) / 2 = 2; column 1 by all
    -> (-1 + 1 + 0) / 3 = 0; column 2 by none -> NaN; column 3 by RM 1 only -> 2. After the update
    (1, 0, NaN), w = (e^.5, 1, 1)/(e^.5 + 2) and column 0 = (e^.5 * 1 + 1 * 3) / (e^.5 + 1) = 1.75508."""
    z = np.array([[1.0, -1.0, np.nan, np.nan], [3.0, 1.0, np.nan, 2.0], [np.nan, 0.0, np.nan, np.nan]])
    ens = OnlineEnsemble(3)
    out = ens.combine(z)
    assert out[0] == pytest.approx(2.0) and out[1] == pytest.approx(0.0) and np.isnan(out[2]) and out[3] == 2.0
    ens.update([1.0, 0.0, np.nan])
    e = math.exp(0.5)
    assert ens.combine(z)[0] == pytest.approx((e + 3) / (e + 1)) == pytest.approx(1.75508, abs=1e-5)
    ens.mask_arm(1)
    assert ens.weights()[1] == 0 and np.isnan(ens.combine(z)[3])  # only the masked RM scored it


def test_online_ensemble_learns_the_reliable_rm_and_ranks_by_it():
    """RM 0 always earns reward 1, RM 1 reward 0: after 10 updates with eta 0.5,
    w_0 = e^5 / (e^5 + 1) = 0.99331, and where the two disagree the ensemble follows RM 0."""
    ens = OnlineEnsemble(2, eta=0.5)
    for _ in range(10):
        ens.update([1.0, 0.0])
    assert ens.weights()[0] == pytest.approx(math.exp(5) / (math.exp(5) + 1))
    z = np.array([[1.0, -1.0], [-1.0, 1.0]])  # RM 0 prefers response 0, RM 1 response 1
    assert np.argmax(ens.combine(z)) == 0


def test_online_ensemble_state_round_trip_and_errors():
    ens = OnlineEnsemble(3, eta=0.3, seed=4)
    ens.update([0.2, np.nan, 0.9])
    ens.mask_arm(2)
    other = OnlineEnsemble(3, eta=0.3, seed=4)
    other.load_state_dict(_savez_round_trip(ens.state_dict()))
    assert np.array_equal(other.weights(), ens.weights()) and other.counts_.tolist() == [1, 0, 1]
    assert other.masked_.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="eta"):
        OnlineEnsemble(3, eta=0.5, seed=4).load_state_dict(ens.state_dict())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ens.update([2.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        ens.update([0.0, 0.0])


def test_pair_agreement():
    z = np.array([[3.0, 1.0, 2.0], [1.0, 3.0, 2.0], [np.nan, 1.0, 0.0]])
    agree = pair_agreement(z, [(0, 1), (2, 1)])
    assert agree[0].tolist() == [1.0, 1.0] and agree[1].tolist() == [0.0, 0.0]
    assert np.isnan(agree[2, 0]) and agree[2, 1] == 0.0


# ----------------------------------------------------------------------------- classifier selection
def _clusters(rng, n_per, centres):
    x = np.concatenate([c + 0.3 * rng.normal(size=(n_per, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n_per)


def test_classifier_selects_the_arm_that_is_a_function_of_the_context():
    """Three context clusters; the right arm is the cluster's index (arms 0, 2, 3 of 4). The
    fitted classifier picks it for fresh contexts and for a batch's mean context."""
    rng = np.random.default_rng(0)
    centres = np.eye(3, 6) * 3.0
    x, y = _clusters(rng, 40, centres)
    arm_of = np.array([0, 2, 3])
    clf = ClassifierSelector(4, 6, seed=1).fit(x, arm_of[y])
    fresh, truth = _clusters(rng, 20, centres)
    assert np.mean(clf.select_batch(fresh) == arm_of[truth]) > 0.95
    for k in range(len(centres)):
        assert clf.select(fresh[truth == k].mean(axis=0)) == arm_of[k]
    assert clf.label_counts_.tolist() == [40, 0, 40, 40]
    clf.update(0, fresh[0], 0.0)  # offline: counted, nothing learned
    assert clf.counts_[0] == 1 and clf.select(centres[1]) == 2
    clf.mask_arm(2)
    assert clf.select(centres[1]) != 2


def test_classifier_before_fit_is_uniform_and_state_round_trips():
    clf = ClassifierSelector(3, 2, seed=0)
    assert np.allclose(clf.scores(np.zeros(2)), 1 / 3)
    rng = np.random.default_rng(1)
    x, y = _clusters(rng, 10, np.array([[2.0, 0.0], [0.0, 2.0]]))
    clf.fit(x, y)
    other = ClassifierSelector(3, 2, seed=0)
    other.load_state_dict(_savez_round_trip(clf.state_dict()))
    probe = rng.normal(size=(5, 2))
    assert np.array_equal(other.predict_proba(probe), clf.predict_proba(probe))
    assert np.array_equal(other.select_batch(probe), clf.select_batch(probe))
    with pytest.raises(ValueError, match="labels"):
        clf.fit(x, np.full(len(x), 7))
    with pytest.raises(ValueError, match="shape"):
        clf.fit(x[:, :1], y)


def test_margin_labels_by_hand():
    """Margins [[0.5, -1.0], [2.0, 1.0]]: std of RM 0's margins is 0.75, of RM 1's 0.5; scaled
    [[0.667, -1.333], [4.0, 2.0]] -> label 1 for both. With [[0.5, -1.0], [-2.0, -1.0]] only RM 0
    orders prompt 0 correctly (label 0) and nobody orders prompt 1 (label -1)."""
    assert margin_labels(np.array([[0.5, -1.0], [2.0, 1.0]])).tolist() == [1, 1]
    assert margin_labels(np.array([[0.5, -1.0], [-2.0, -1.0]])).tolist() == [0, -1]
    # scale matters, not size: RM 0's margin 10 is typical for it (std 10), RM 1's 0.9 is large for it
    assert margin_labels(np.array([[10.0, -10.0], [0.9, 0.1]]))[0] == 1


# ----------------------------------------------------------------------------- bandit variants
@pytest.mark.parametrize("name,kwargs", [("lints", {}), ("sliding_linucb", {"alpha": 1.0, "window": 100})])
def test_contextual_variants_learn_the_right_arm_per_context(name, kwargs):
    """Two contexts (domains); arm 0 pays 1 on domain A and 0 on B, arm 1 the reverse, arm 2 pays 0.2.
    After 150 rounds the variant picks the domain's arm in at least 90% of the last 50 rounds.
    (With LASeR's alpha = 0.1, LinUCB can settle on the safe 0.2 arm before trying the others, so
    the sliding-window variant is tested with alpha = 1.)"""
    sel = make_selector(name, 3, 2, seed=0, **kwargs)
    rng = np.random.default_rng(0)
    ctx = np.eye(2)
    hits = []
    for _ in range(200):
        d = int(rng.integers(2))
        arm = sel.select(ctx[d])
        sel.update(arm, ctx[d], 1.0 if arm == d else 0.2 if arm == 2 else 0.0)
        hits.append(arm == d)
    assert np.mean(hits[-50:]) >= 0.9


def test_exp3_variant_prefers_the_best_arm():
    """Non-contextual: arm 1 pays 1, the others 0. Exp3 (gamma 0.1) must put most of its
    probability on arm 1 after 300 rounds (p_1 close to 1 - gamma + gamma/3)."""
    sel = make_selector("exp3", 3, 1, seed=0)
    for _ in range(300):
        arm = sel.select(np.zeros(1))
        sel.update(arm, np.zeros(1), 1.0 if arm == 1 else 0.0)
    assert sel.probabilities()[1] > 0.9


def test_method_names():
    names = ["a", "b"]
    assert check_method("laser@lints", names) is None and check_method("single:a", names) is None
    assert "unknown selector" in check_method("laser@nope", names)
    assert "unknown reward model" in check_method("single:c", names)
    assert "unknown method" in check_method("bogus", names)
    methods = default_methods(names)
    assert {"online_ensemble", "classifier", "laser@exp3", "laser@lints", "laser@sliding_linucb"} <= set(methods)
    assert not selects_arms("online_ensemble") and selects_arms("classifier")
