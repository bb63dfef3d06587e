"""The TRL router without a trainer: contexts, the pair view, rounds called the way TRL calls reward
functions, evaluation, RM failures, state round trips, bad settings, and two simulated processes
(threads sharing in-memory collectives) agreeing on every decision."""

from __future__ import annotations

import hashlib
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("trl")

from laser.bandits import FixedSelector, LinUCB  # noqa: E402
from laser.integrations.context import HashedNgramEmbedder, completion_text, prompt_text  # noqa: E402
from laser.integrations.trl import RMRouter  # noqa: E402
from laser.rewards.base import RewardModelError  # noqa: E402
from laser.routing import FEEDBACKS, Batch  # noqa: E402
from laser.routing.feedback import majority_answer, pair_correctness  # noqa: E402
from laser.routing.outcome import correctness  # noqa: E402
from laser.routing.pairs import build_pairs, ranked_pairs  # noqa: E402


def group_pair_values(task, texts, scores, gold, keys):
    """One GRPO group's per-pair values, computed by the routing core as the router does: the
    "all" pair rule on the chosen RM's scores, correctness against each feedback's reference."""
    batch = Batch(["q"], tasks=[task], answers=[gold])
    batch.add_responses(list(texts), [0] * len(texts))
    batch.pairs = [build_pairs(np.asarray(scores, dtype=np.float64), 0, "all")]
    return {key: correctness(batch, FEEDBACKS[key].reference).per_pair.tolist() for key in keys}


def pooled(values):
    """Mean over all pairs of several groups (sum / count); NaN when there is no pair."""
    flat = [v for group in values for v in group]
    return float(np.mean(flat)) if flat else float("nan")


TEXTS = ["The answer is 3", "The answer is 5", "The answer is 3", "no idea"]  # correct vs gold 3: 1 0 1 0


class CountRM:
    """An RM scoring with ``fn(prompt, response)`` that records the size of every call."""

    def __init__(self, name, fn=lambda p, r: float(len(r)), fail=False):
        self.name, self.fn, self.fail, self.calls = name, fn, fail, []

    def score(self, prompts, responses):
        self.calls.append(len(responses))
        if self.fail:
            raise RewardModelError(f"{self.name} is down")
        return np.array([self.fn(p, r) for p, r in zip(prompts, responses, strict=True)], dtype=np.float64)


def by_answer(good=True):
    """Scores a response 1 + tiny jitter when it says 3 (good) or when it does not (bad)."""
    return lambda p, r: float(("3" in r) == good) + 0.01 * len(r)


def serve(router, prompts, completions, metrics=None, **columns):
    """Call every reward function once, in list order, as TRL's _calculate_rewards does."""
    kw = dict(
        completion_ids=None,
        trainer_state=SimpleNamespace(global_step=0),
        log_extra=None,
        log_metric=(lambda k, v: metrics.setdefault(k, []).append(v)) if metrics is not None else None,
    )
    return [f(prompts=prompts, completions=completions, **columns, **kw) for f in router.reward_funcs]


def make_router(rms, g=4, training=True, **kw):
    kw.setdefault("context", "hashed")
    kw.setdefault("context_dim", 32)
    router = RMRouter(rms, **kw)
    router.setup(g, g, model=SimpleNamespace(training=training))
    return router


def one_group(prompt="What is 1+2?"):
    return [prompt] * 4, list(TEXTS), {"answer": ["3"] * 4, "task": ["gsm8k"] * 4}


# ---------------------------------------------------------------- contexts
def test_hashed_embedding_matches_an_independent_computation():
    """For "Ab ab" with word unigrams only: features w1:ab twice; x[h] = 2 s(h) -> unit vector +-e_h."""
    emb = HashedNgramEmbedder(dim=16, word_ngrams=(1,), char_ngrams=())
    digest = int.from_bytes(hashlib.blake2b(b"w1:ab", digest_size=8).digest(), "little")
    expected = np.zeros(16)
    expected[(digest >> 1) % 16] = 1.0 if digest & 1 else -1.0
    np.testing.assert_array_equal(emb.embed(["Ab ab"])[0], expected)
    both = HashedNgramEmbedder(dim=64)
    x = both.embed(["Is 3+4>5?", "Is 3+4>5?", ""])
    np.testing.assert_array_equal(x[0], x[1])  # deterministic, no salted hash
    assert np.linalg.norm(x[0]) == pytest.approx(1.0) and not x[2].any()
    assert both.features("a b") == ["w1:a", "w1:b", "w2:a b", "c3:a b"]


def test_chat_messages_become_plain_text():
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    assert prompt_text(conv) == "2+2?" and prompt_text("raw") == "raw"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "4"}]}]) == "4"
    with pytest.raises(TypeError, match="prompt must be"):
        prompt_text(3)


# ---------------------------------------------------------------- the pair view
def test_ranked_pairs_drop_ties_and_nan():
    """Scores [0.5, nan, 0.2, 0.5]: finite indices 0, 2, 3; 0 and 3 tie -> pairs (0,2), (3,2)."""
    assert ranked_pairs([0.5, np.nan, 0.2, 0.5]) == [(0, 2), (3, 2)]
    assert ranked_pairs([1.0]) == [] and ranked_pairs([np.nan, np.nan]) == []


def test_group_value_by_hand():
    """TEXTS are right, wrong, right, unanswered against gold 3 (c = 2, w = 2).

    Scores [0.9, 0.1, 0.8, 0.2] rank them 0 > 2 > 3 > 1: the 6 pairs (0,1) (0,2) (0,3) (2,1) (2,3)
    (3,1) give 1, 0, 1, 1, 1, 0 -> 4/6 (= c w (2 AUC - 1) / P with AUC = 1). The majority answer of
    the group is 3 too (two votes against one), so the label-free value is also 4/6. Reversed
    scores give -4/6.
    """
    vals = group_pair_values("gsm8k", TEXTS, [0.9, 0.1, 0.8, 0.2], "3", ["pair_accuracy", "majority_pair_accuracy"])
    assert vals["pair_accuracy"] == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert pooled([vals["pair_accuracy"]]) == pytest.approx(4 / 6)
    assert vals["majority_pair_accuracy"] == vals["pair_accuracy"]
    rev = group_pair_values("gsm8k", TEXTS, [0.1, 0.9, 0.2, 0.8], "3", ["pair_accuracy"])
    assert pooled([rev["pair_accuracy"]]) == pytest.approx(-4 / 6)
    assert np.isnan(pooled([[], []]))


def test_mixed_reference_is_gold_where_labelled_else_majority():
    """Group answers 5, 5, 3, none. Scores 0.9 > 0.8 > 0.1 > 0.0 rank them 0 > 1 > 2 > 3. Against
    the majority answer 5 the pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3) give 0 1 1 1 1 0 -> 4/6;
    against the gold 3 they give 0 -1 0 -1 0 1 -> -1/6. "mixed" uses the gold when there is one."""
    texts = ["The answer is 5", "The answer is 5", "The answer is 3", "no idea"]
    scores = [0.9, 0.8, 0.1, 0.0]
    keys = ["pair_accuracy", "majority_pair_accuracy", "mixed_pair_accuracy"]
    labelled = {k: pooled([v]) for k, v in group_pair_values("gsm8k", texts, scores, "3", keys).items()}
    assert labelled == pytest.approx(
        {"pair_accuracy": -1 / 6, "majority_pair_accuracy": 4 / 6, "mixed_pair_accuracy": -1 / 6}
    )
    unlabelled = group_pair_values("gsm8k", texts, scores, "", ["mixed_pair_accuracy"])
    assert pooled([unlabelled["mixed_pair_accuracy"]]) == pytest.approx(4 / 6)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.floats(0, 1, allow_nan=False)), min_size=2, max_size=10, unique_by=lambda t: t[1]
    )
)
def test_group_value_equals_the_auc_formula(rows):
    """Without ties the value is c w (2 AUC - 1) / (G (G - 1) / 2), AUC from scipy's Mann-Whitney U."""
    from scipy.stats import mannwhitneyu

    correct = [c for c, _ in rows]
    texts = ["The answer is 3" if c else "The answer is 4" for c in correct]
    scores = [s for _, s in rows]
    value = pooled([group_pair_values("gsm8k", texts, scores, "3", ["pair_accuracy"])["pair_accuracy"]])
    c, w, g = sum(correct), len(correct) - sum(correct), len(correct)
    if c == 0 or w == 0:
        assert value == 0.0
        return
    right = [s for ok, s in rows if ok]
    wrong = [s for ok, s in rows if not ok]
    auc = mannwhitneyu(right, wrong).statistic / (c * w)
    assert value == pytest.approx(c * w * (2 * auc - 1) / (g * (g - 1) / 2))


def test_shared_feedback_helpers():
    """Majority of 3, 5, 3, None is 3; pair (0, 1) points to the right answer (+1), (1, 2) away (-1)."""
    assert majority_answer("gsm8k", TEXTS) == "3"
    assert majority_answer("gsm8k", ["no", "idea"]) is None
    assert pair_correctness("gsm8k", TEXTS, [(0, 1), (1, 2), (0, 2)], "3") == [1.0, -1.0, 0.0]


# ---------------------------------------------------------------- rounds
def test_one_rm_scores_a_round_and_the_others_return_none():
    """ "good" scores TEXTS 1.15, 0.15, 1.15, 0.07: rows 0 and 2 tie, leaving 5 pairs; (0,1) (0,3)
    (2,1) (2,3) put a right answer over a wrong one (+1 each), (1,3) two wrong ones (0): 4/5."""
    rms = [CountRM("bad", by_answer(False)), CountRM("good", by_answer(True))]
    router = make_router(rms, selector=FixedSelector(2, arm=1))
    prompts, texts, cols = one_group()
    metrics = {}
    out = serve(router, prompts, texts, metrics, **cols)
    assert out[0] == [None] * 4 and all(isinstance(v, float) for v in out[1])
    assert rms[0].calls == [] and rms[1].calls == [4]
    rec = router.history_[0]
    assert rec["arms"] == [1] and rec["pair_accuracy"] == pytest.approx(4 / 5)
    assert rec["raw"] == [pytest.approx(4 / 5)] and rec["reward"] == [0.5]  # first value normalises to 0.5
    assert router.selector.counts_.tolist() == [0, 1] and router.responses_scored_.tolist() == [0, 4]
    assert metrics["laser/share/good"] == [1.0] and metrics["laser/pair_accuracy"] == [pytest.approx(4 / 5)]


def test_unscorable_rows_stay_none():
    rm = CountRM("nan", lambda p, r: np.nan if "idea" in r else 1.0 + len(r))
    router = make_router([rm, CountRM("other")], selector=FixedSelector(2, arm=0))
    prompts, texts, cols = one_group()
    out = serve(router, prompts, texts, **cols)
    assert out[0][3] is None and out[0][0] == 16.0


def test_evaluation_never_updates_the_bandit():
    """An evaluation round between two training rounds changes no state: the router that
    evaluated decides and learns exactly like its twin that did not."""
    prompts, texts, cols = one_group()
    twins = [make_router([CountRM("a"), CountRM("b", by_answer())], context_dim=8) for _ in range(2)]
    for i, router in enumerate(twins):
        serve(router, prompts, texts, **cols)
        if i == 0:
            before = router.selector.state_dict()
            router._model.training = False
            serve(router, prompts, texts, **cols)
            router._model.training = True
            after = router.selector.state_dict()
            assert all(np.array_equal(before[k], after[k]) for k in before)
            assert router.eval_rounds_ == 1 and len(router.history_) == 1
        for _ in range(3):
            serve(router, prompts, texts, **cols)
    assert twins[0].history_ == twins[1].history_
    assert len(twins[0].normalizer.history_) == 4


def test_half_served_round_is_refused():
    router = make_router([CountRM("a"), CountRM("b")])
    prompts, texts, cols = one_group()
    router.reward_funcs[0](prompts=prompts, completions=texts, **cols)
    with pytest.raises(RuntimeError, match=r"\['b'\]"):
        router.check_idle()
    with pytest.raises(RuntimeError, match="new round began"):
        router.reward_funcs[0](prompts=prompts, completions=list(texts), **cols)


def test_failed_rm_is_masked_and_the_round_rerouted():
    rms = [CountRM("down", fail=True), CountRM("up")]
    router = make_router(rms, selector="round_robin")  # arm 0 first
    prompts, texts, cols = one_group()
    out = serve(router, prompts, texts, **cols)
    assert out[0] == [None] * 4 and len([v for v in out[1] if v is not None]) == 4
    assert router.selector.masked.tolist() == [True, False] and "down is down" in router.down_[0]
    rms[1].fail = True
    with pytest.raises(RuntimeError, match="every reward model is down.*down: .*up: "):
        serve(router, prompts, texts, **cols)


def test_per_prompt_routing_scores_each_group_with_its_arm():
    """Two groups of 4; round-robin gives group 0 arm 0 and group 1 arm 1; one update per group."""
    rms = [CountRM("a", by_answer()), CountRM("b", by_answer())]
    router = make_router(rms, selector="round_robin", granularity="prompt")
    p0, t0, c0 = one_group("q one")
    p1, t1, c1 = one_group("q two")
    out = serve(router, p0 + p1, t0 + t1, answer=c0["answer"] * 2, task=c0["task"] * 2)
    assert [v is None for v in out[0]] == [False] * 4 + [True] * 4
    assert rms[0].calls == [4] and rms[1].calls == [4]
    assert router.history_[0]["arms"] == [0, 1] and router.selector.counts_.tolist() == [1, 1]


def test_state_round_trip_continues_identically(tmp_path):
    prompts, texts, cols = one_group()
    rms = lambda: [CountRM("a"), CountRM("b", by_answer()), CountRM("c", by_answer(False))]  # noqa: E731
    a = make_router(rms(), context_dim=8)
    for _ in range(3):
        serve(a, prompts, texts, **cols)
    a.save(str(tmp_path / "checkpoint-3"), 3)
    b = make_router(rms(), context_dim=8)
    b.load(str(tmp_path / "checkpoint-3"), expect_step=3)
    for _ in range(4):
        serve(a, prompts, texts, **cols)
        serve(b, prompts, texts, **cols)
    assert a.history_ == b.history_ and a.responses_scored_.tolist() == b.responses_scored_.tolist()
    with pytest.raises(ValueError, match="step 3, the trainer resumes at step 5"):
        b.load(str(tmp_path / "checkpoint-3"), expect_step=5)
    with pytest.raises(ValueError, match="rm_names"):
        make_router([CountRM("x"), CountRM("b"), CountRM("c")], context_dim=8).load(str(tmp_path / "checkpoint-3"))
    with pytest.raises(FileNotFoundError, match="no router state"):
        b.load(str(tmp_path / "nowhere"))


def test_selection_table_counts_the_last_third():
    router = make_router([CountRM("a"), CountRM("b")], tag_column="domain")
    router.history_ = [{"arms": [0], "tags": ["x"]}] * 3 + [
        {"arms": [1], "tags": ["x"]},
        {"arms": [0, 1], "tags": ["y", "y"]},
    ]
    assert router.selection_table(last_fraction=0.4) == {"x": {"a": 0.0, "b": 1.0}, "y": {"a": 0.5, "b": 0.5}}


# ---------------------------------------------------------------- bad settings
def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"duplicate reward model names \['a'\]"):
        RMRouter([CountRM("a"), CountRM("a")])
    with pytest.raises(ValueError, match="selector has 3 arms but 2 reward models"):
        RMRouter([CountRM("a"), CountRM("b")], selector=LinUCB(3, 8))
    with pytest.raises(ValueError, match="needs the training loss"):
        RMRouter([CountRM("a")], feedback="neg_loss")
    RMRouter([CountRM("a")], feedback="mixed_pair_accuracy").check_dataset(
        [{"prompt": "x", "task": "gsm8k", "answer": ""}, {"prompt": "y", "task": "gsm8k", "answer": "3"}]
    )
    with pytest.raises(ValueError, match="granularity 'batch'.*context 'bert'"):
        RMRouter([CountRM("a")], granularity="batch", context="bert")
    router = RMRouter([CountRM("a"), CountRM("b")], context="hashed")
    with pytest.raises(ValueError, match=r"no column\(s\) \['answer'\].*gold answers"):
        router.check_dataset([{"prompt": "x", "task": "gsm8k"}])
    with pytest.raises(ValueError, match="2 dataset row.*row 1: task='poetry'.*row 2: answer is empty"):
        router.check_dataset(
            [
                {"prompt": "x", "task": "gsm8k", "answer": "3"},
                {"prompt": "y", "task": "poetry", "answer": "3"},
                {"prompt": "z", "task": "gsm8k", "answer": ""},
            ]
        )
    RMRouter([CountRM("a")], feedback="majority_pair_accuracy", task="gsm8k").check_dataset([{"prompt": "x"}])
    args = SimpleNamespace(
        gradient_accumulation_steps=1, steps_per_generation=4, num_iterations=1, save_strategy="steps", save_steps=6
    )
    with pytest.raises(ValueError, match="save_steps=6 .* multiple of 4"):
        router.check_args(args)
    with pytest.raises(ValueError, match="at least 2 completions"):
        router.setup(1)


# ---------------------------------------------------------------- two processes, simulated
class ThreadCollectives:
    """In-memory collectives for ``world`` threads (same semantics as torch.distributed's)."""

    def __init__(self, shared, rank):
        self.shared, self.rank, self.world = shared, rank, len(shared["slots"])

    def all_gather(self, obj):
        self.shared["slots"][self.rank] = obj
        self.shared["barrier"].wait()
        out = list(self.shared["slots"])
        self.shared["barrier"].wait()
        return out

    @property
    def is_main(self):
        return self.rank == 0

    def broadcast(self, obj, src=0):
        return self.all_gather(obj)[src]

    def sum(self, values):
        return [float(sum(col)) for col in zip(*self.all_gather(list(values)), strict=True)]


@pytest.mark.parametrize("granularity", ["round", "prompt"])
def test_two_processes_agree_on_every_decision(granularity):
    """3 prompts x 4 completions split 6/6 over two ranks (group 1 straddles them), 6 rounds:
    both routers make the same decisions and end in the same state, and each rank's RMs score
    only that rank's rows."""
    shared = {"slots": [None, None], "barrier": threading.Barrier(2)}
    rms = [[CountRM("a"), CountRM("b", by_answer()), CountRM("c", by_answer(False))] for _ in range(2)]
    routers = [make_router(rms[r], granularity=granularity, context_dim=16) for r in range(2)]
    for r, router in enumerate(routers):
        router._dist = ThreadCollectives(shared, r)
    prompts = [q for q in ("1+2?", "Is 3 odd?", "Max of 3, 1?") for _ in range(4)]
    texts = TEXTS * 3
    cols = {"answer": ["3"] * 12, "task": ["gsm8k"] * 12}
    errors = []

    def worker(r):
        try:
            sl = slice(6 * r, 6 * r + 6)
            for _ in range(6):
                serve(routers[r], prompts[sl], texts[sl], **{k: v[sl] for k, v in cols.items()})
        except Exception as exc:  # surfaced below; a hung barrier would time out instead
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert routers[0].history_ == routers[1].history_ and len(routers[0].history_) == 6
    s0, s1 = (rt.selector.state_dict() for rt in routers)
    assert all(np.array_equal(s0[k], s1[k]) for k in s0)
    for r in range(2):
        assert sum(sum(rm.calls) for rm in rms[r]) == 6 * 6  # each rank scored its own 6 rows per round
    assert routers[0].responses_scored_.sum() == 12 * 6  # counters hold both ranks' rows


# ---------------------------------------------------------------- the routing core's rules, in the TRL router
def test_no_pair_round_tied_is_lowest_identical_is_skipped():
    """A constant RM ties TEXTS (different completions): the round has no pair and is learned as
    the lowest reward (0); a round of 4 identical completions is skipped (no update)."""
    router = make_router([CountRM("flat", lambda p, r: 1.0), CountRM("b")], selector=FixedSelector(2, arm=0))
    prompts, texts, cols = one_group()
    serve(router, prompts, texts, **cols)
    assert router.history_[0]["raw"] == [] and router.history_[0]["reward"] == [0.0]
    assert router.tied_ == 1 and router.selector.counts_.tolist() == [1, 0]
    serve(router, prompts, [TEXTS[0]] * 4, **cols)
    assert router.history_[1]["reward"] == [] and router.skipped_ == 1 and router.selector.counts_.tolist() == [1, 0]


def test_any_exception_masks_the_rm_and_infinite_scores_too():
    """A local RM's bug (KeyError) and an RM returning inf are masked; the round goes to the next arm."""

    def buggy(p, r):
        raise KeyError("bug")

    rms = [CountRM("buggy", buggy), CountRM("inf", lambda p, r: float("inf")), CountRM("ok")]
    router = make_router(rms, selector="round_robin")
    prompts, texts, cols = one_group()
    out = serve(router, prompts, texts, **cols)
    assert out[2] == [float(len(t)) for t in TEXTS] and out[0] == out[1] == [None] * 4
    assert "KeyError" in router.down_[0] and "infinite" in router.down_[1]


def test_counters_responses_scored_and_score_calls():
    """Two rounds of one group of 4 on a fixed arm: 8 responses in 2 score() calls."""
    router = make_router([CountRM("a"), CountRM("b")], selector=FixedSelector(2, arm=1))
    prompts, texts, cols = one_group()
    serve(router, prompts, texts, **cols)
    serve(router, prompts, texts, **cols)
    assert router.responses_scored_.tolist() == [0, 8] and router.score_calls_.tolist() == [0, 2]


def test_nonfinite_feedback_stops_the_round_naming_the_arm():
    """A feedback that returns inf: the core's rule, NonFiniteReward naming the arm, nothing learned."""
    import dataclasses

    from laser.routing import NonFiniteReward

    router = make_router([CountRM("a"), CountRM("b", by_answer())], selector=FixedSelector(2, arm=1))
    router.core.fb = dataclasses.replace(router.core.fb, fn=lambda s: float("inf"))
    prompts, texts, cols = one_group()
    with pytest.raises(NonFiniteReward, match=r"\(inf\), arm b"):
        serve(router, prompts, texts, **cols)
    assert router.selector.counts_.tolist() == [0, 0] and router.normalizer.history_ == []


def test_a_version_1_router_state_still_loads(tmp_path):
    """A checkpoint written before the routing core (laser_router/state.npz + router.json, version 1)
    loads into today's router: the same selector, normaliser, counters and history, and the two
    routers then decide alike."""
    import json

    prompts, texts, cols = one_group()
    make = lambda: make_router([CountRM("a"), CountRM("b", by_answer())], context_dim=8)  # noqa: E731
    a = make()
    for _ in range(3):
        serve(a, prompts, texts, **cols)
    sd = a.state_dict()
    v1 = tmp_path / "checkpoint-3" / "laser_router"
    v1.mkdir(parents=True)
    arrays = {
        **{f"selector.{k}": v for k, v in sd["strategy"].items()},
        **{f"normalizer.{k}": v for k, v in sd["normalizer"].items()},
        "rows_scored": a.responses_scored_,
        "calls": a.score_calls_,
    }
    with open(v1 / "state.npz", "wb") as f:
        np.savez(f, **arrays)
    meta = {**sd["router"], "version": 1, "skipped": a.skipped_, "down": {}, "global_step": 3, "mid_round": False}
    (v1 / "router.json").write_text(json.dumps(meta))
    b = make()
    b.load(str(tmp_path / "checkpoint-3"), expect_step=3)
    assert b.history_ == a.history_ and b.responses_scored_.tolist() == a.responses_scored_.tolist()
    for _ in range(3):
        serve(a, prompts, texts, **cols)
        serve(b, prompts, texts, **cols)
    assert b.history_ == a.history_
