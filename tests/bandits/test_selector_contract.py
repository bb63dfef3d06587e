"""The interface every selector shares: state round trip, masking, arms, batching, factory."""

import io

import numpy as np
import pytest

from laser.bandits import SELECTORS, NoArmAvailable, Selector, make_selector

DIM = 6
NAMES = sorted(SELECTORS)


def build(name, n_arms=3, seed=11, **kw):
    if name == "fixed":
        kw.setdefault("arm", 1)
    return make_selector(name, n_arms, DIM, seed, **kw)


def drive(sel, rng, steps):
    """Interleaved select/update with rewards that depend on arm and context; returns arms."""
    arms = []
    for _ in range(steps):
        c = rng.normal(size=DIM)
        k = sel.select(c)
        sel.update(k, c, float(np.clip(0.5 + 0.3 * c[k % DIM] + 0.1 * rng.normal(), 0, 1)))
        arms.append(k)
    return arms


def roundtrip(sd):
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        return dict(f)


@pytest.mark.parametrize("name", NAMES)
def test_state_roundtrip_next_200_decisions_equal(name):
    """Save after 60 steps through np.savez / np.load(allow_pickle=False), load into a fresh
    object: the next 200 decisions (with updates) equal the uninterrupted object's."""
    a = build(name)
    drive(a, np.random.default_rng(0), 60)
    sd = a.state_dict()
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype != object for k, v in sd.items())
    loaded = roundtrip(sd)
    assert set(loaded) == set(sd)
    for k in sd:
        assert loaded[k].dtype == sd[k].dtype and np.array_equal(loaded[k], sd[k]), k
    b = build(name, seed=999)  # the seed is a hyper-parameter: a mismatch is an error
    with pytest.raises(ValueError, match="seed"):
        b.load_state_dict(loaded)
    b = build(name)
    b.load_state_dict(loaded)
    assert drive(a, np.random.default_rng(1), 200) == drive(b, np.random.default_rng(1), 200)
    np.testing.assert_array_equal(a.counts_, b.counts_)


@pytest.mark.parametrize("name", NAMES)
def test_load_rejects_other_selector_or_arm_count(name):
    sd = build(name).state_dict()
    other = "random" if name != "random" else "round_robin"
    with pytest.raises(ValueError, match=f"from selector '{name}'"):
        build(other).load_state_dict(sd)
    with pytest.raises(ValueError, match="n_arms: saved 3, this object 4"):
        build(name, n_arms=4).load_state_dict(sd)


@pytest.mark.parametrize("name", NAMES)
def test_masking_and_removal(name):
    sel = build(name)
    rng = np.random.default_rng(2)
    drive(sel, rng, 10)
    sel.mask_arm(0)
    assert sel.masked.tolist() == [True, False, False]
    for _ in range(30):
        c = rng.normal(size=DIM)
        assert np.isnan(sel.scores(c)[0]) and not np.isnan(sel.scores(c)[1:]).any()
        if name != "fixed":
            k = sel.select(c)
            assert k != 0
            sel.update(k, c, 0.5)
    sel.update(0, rng.normal(size=DIM), 0.5)  # a masked arm may still receive its pending update
    sel.remove_arm(1)
    sel.mask_arm(2)
    with pytest.raises(NoArmAvailable, match="all 3 arms are masked or removed"):
        sel.select(rng.normal(size=DIM))
    with pytest.raises(ValueError, match="arm 1 was removed"):
        sel.unmask_arm(1)
    sel.unmask_arm(0)
    sel.unmask_arm(2)
    if name == "fixed":
        with pytest.raises(NoArmAvailable, match="arm 1 is masked or removed"):
            sel.select(rng.normal(size=DIM))
    else:
        assert all(sel.select(rng.normal(size=DIM)) != 1 for _ in range(20))


@pytest.mark.parametrize("name", NAMES)
def test_add_arm_leaves_other_arms_untouched(name):
    sel = build(name)
    drive(sel, np.random.default_rng(3), 30)
    before = sel.state_dict()
    assert sel.add_arm() == 3 and sel.n_arms == 3 + 1 and sel.counts_.tolist()[-1] == 0
    after = sel.state_dict()
    for key, value in before.items():
        if key.startswith(("arm", "hp.")) or key == "rng":
            assert np.array_equal(after[key], value), key
    c = np.random.default_rng(4).normal(size=DIM)
    assert sel.scores(c).shape == (4,)
    sel.update(3, c, 1.0)
    assert sel.counts_[3] == 1


@pytest.mark.parametrize("name", NAMES)
def test_batch_api(name):
    """select_batch gives int64 (B,) in range; update_batch equals the same updates one by one."""
    rng = np.random.default_rng(5)
    C = rng.normal(size=(16, DIM))
    a, b = build(name), build(name)
    arms = a.select_batch(C)
    np.testing.assert_array_equal(b.select_batch(C), arms)  # same seed, same decisions
    assert arms.shape == (16,) and arms.dtype == np.int64 and ((0 <= arms) & (arms < 3)).all()
    rewards = rng.uniform(size=16)
    a.update_batch(arms, C, rewards)
    for k, c, r in zip(arms, C, rewards, strict=True):
        b.update(int(k), c, float(r))
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), key
    assert a.counts_.sum() == 16
    with pytest.raises(ValueError, match="equal lengths"):
        a.update_batch(arms[:3], C, rewards)


def test_registry_and_factory_errors():
    assert {"linucb", "fixed", "random", "round_robin"} <= set(SELECTORS)
    assert all(issubclass(cls, Selector) and SELECTORS[cls.name] is cls for cls in SELECTORS.values())
    with pytest.raises(ValueError, match="unknown selector 'linucbb'; valid names: .*linucb"):
        make_selector("linucbb", 3, DIM, 0)
    with pytest.raises(TypeError, match="unknown option\\(s\\) 'alpah'"):
        make_selector("linucb", 3, DIM, 0, alpah=0.2)
    assert make_selector("linucb", 3, DIM, 0, alpha=0.3).alpha == 0.3
    assert make_selector("fixed", 3, DIM, 0, arm=2).select(np.zeros(DIM)) == 2


def test_no_torch_import():
    import subprocess
    import sys

    code = "import sys, laser.bandits; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", NAMES)
def test_select_with_scores_is_select_plus_the_scores_used(name):
    """Twins with the same state: select_with_scores picks what select picks (same RNG use),
    and for argmax rules the arm is the best of the returned scores (NaN on masked arms)."""
    a, b = build(name), build(name)
    rng = np.random.default_rng(6)
    drive(a, np.random.default_rng(7), 20)
    drive(b, np.random.default_rng(7), 20)
    a.mask_arm(2)
    b.mask_arm(2)
    for _ in range(30):
        c = rng.normal(size=DIM)
        k, s = a.select_with_scores(c)
        assert k == b.select(c) and s.shape == (3,) and np.isnan(s[2]) and k != 2
        if name in ("linucb", "lints", "sliding_linucb", "ucb1"):
            assert s[k] == np.nanmax(s)
        a.update(k, c, 0.5)
        b.update(k, c, 0.5)
