"""Golden numbers for the loss and the pair rules, derived by hand in each docstring."""

import math

import numpy as np
import pytest
import torch

from laser.routing.pairs import build_pairs, ensemble_scores, majority_agrees, standardize
from laser.training.losses import dpo_loss, laser_loss, nll_loss


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_dpo_loss_golden():
    """Pair 1: policy (-1, -2), ref (-1.5, -1.5), beta 0.1.
    margin = (-1 + 1.5) - (-2 + 1.5) = 0.5 + 0.5 = 1.0; loss = -log sigmoid(0.1) = log(1 + e^-0.1)
    = log(1.904837418...) = 0.644396660...
    Pair 2: policy equals reference -> margin 0 -> loss = log 2 = 0.693147...
    Pair 3: margin -2, beta 0.5 -> log(1 + e^1) = 1.313261687..."""
    out = dpo_loss(t(-1.0, -3.0, -1.0), t(-2.0, -4.0, -1.0), t(-1.5, -3.0, 0.0), t(-1.5, -4.0, -2.0), 0.1)
    assert out.shape == (3,)
    assert out[0].item() == pytest.approx(0.6443966600735709, abs=1e-12)
    assert out[1].item() == pytest.approx(math.log(2), abs=1e-12)
    out2 = dpo_loss(t(-1.0), t(-1.0), t(0.0), t(-2.0), 0.5)  # margin (-1) - (1) = -2
    assert out2.item() == pytest.approx(1.3132616875182228, abs=1e-12)


def test_dpo_loss_is_stable_for_huge_margins():
    """margin -2000, beta 1: -log sigmoid(-2000) = 2000 exactly in float64 (log-space, no overflow)."""
    out = dpo_loss(t(-1000.0), t(1000.0), t(0.0), t(0.0), 1.0)
    assert torch.isfinite(out).all() and out.item() == pytest.approx(2000.0)
    assert dpo_loss(t(1000.0), t(-1000.0), t(0.0), t(0.0), 1.0).item() == pytest.approx(0.0, abs=1e-300)


def test_nll_and_combined_loss():
    """NLL = -logp/len: -(-6)/3 = 2.0 and -(-1)/4 = 0.25. Combined with weight 0.5:
    dpo(margin 0) + 0.5 * 2.0 = log 2 + 1.0."""
    assert nll_loss(t(-6.0, -1.0), t(3.0, 4.0)).tolist() == [2.0, 0.25]
    terms = laser_loss(t(-6.0), t(-5.0), t(-6.0), t(-5.0), t(3.0), beta=0.1, nll_weight=0.5)
    assert terms["loss"].item() == pytest.approx(math.log(2) + 1.0)
    pure = laser_loss(t(-6.0), t(-5.0), t(-6.0), t(-5.0), t(3.0), beta=0.1, nll_weight=0.0)
    assert pure["loss"].item() == pytest.approx(math.log(2))


def test_pairs_top_vs_rest_matches_reference_rule_and_drops_ties():
    """Scores rank as idx 2 (0.9) > 0 (0.5) = 3 (0.5) > 1 (0.1); NaN at 4 is unscorable.
    top_vs_rest with P=3: (2,0), (2,3), (2,1)."""
    s = np.array([0.5, 0.1, 0.9, 0.5, np.nan])
    assert build_pairs(s, 3, "top_vs_rest") == [(2, 0), (2, 3), (2, 1)]
    assert build_pairs(s, 1, "top_vs_rest") == [(2, 0)]
    tied = np.array([1.0, 1.0, 0.0])
    assert build_pairs(tied, 2, "top_vs_rest") == [(0, 2)]  # (0,1) is a tie and is dropped
    assert build_pairs(np.array([1.0, np.nan]), 3, "top_vs_rest") == []


def test_pairs_other_rules():
    """ranked: 3 (4.) > 0 (3.) > 2 (2.) > 1 (1.) > 4 (0.)"""
    s = np.array([3.0, 1.0, 2.0, 4.0, 0.0])
    assert build_pairs(s, 5, "best_vs_worst") == [(3, 4)]
    assert build_pairs(s, 5, "topk_vs_bottomk") == [(3, 4), (0, 1)]
    with pytest.raises(ValueError, match="unknown pairing rule"):
        build_pairs(s, 1, "nope")


def test_standardize_and_ensemble_against_hand_values():
    """RM0 scores (1, 2, 3): mean 2, std sqrt(2/3) -> z = (-1.2247, 0, 1.2247).
    RM1 scores (10, 10, 10): std 0 -> zeros. Ensemble = mean over RMs = z0 / 2."""
    m = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0]])
    z = standardize(m)
    assert z[0] == pytest.approx([-1.224744871, 0.0, 1.224744871])
    assert z[1].tolist() == [0.0, 0.0, 0.0]
    assert ensemble_scores(m) == pytest.approx([-0.6123724357, 0.0, 0.6123724357])
    with_nan = np.array([[1.0, np.nan], [np.nan, np.nan]])
    e = ensemble_scores(with_nan)
    assert e[0] == 0.0 and np.isnan(e[1])


def test_agreement_keeps_only_majority_pairs():
    """3 RMs; responses 0 and 1. Two RMs prefer 0 -> kept; one of three -> dropped."""
    votes = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 5.0]])
    assert majority_agrees(votes, 0, 1)
    assert not majority_agrees(votes, 1, 0)
    assert build_pairs(np.array([1.0, 0.0]), 1, "top_vs_rest", votes=votes) == [(0, 1)]
    split = np.array([[1.0, 0.0], [0.0, 1.0]])  # 1 vs 1 is no strict majority
    assert build_pairs(np.array([1.0, 0.0]), 1, "top_vs_rest", votes=split) == []
