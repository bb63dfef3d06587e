"""The TRL router with ``selector="reliability"`` on chat prompts without gold answers.

The reward models are examples/trl_chat_reliability.py's: a hidden true preference ``q`` and RMs
that follow it with known weights per domain, so each domain's best RM is known by construction
(and measured from ``q`` independently of the router, :func:`true_accuracy`). Rounds are called
the way TRL calls reward functions (one call per RM, in list order), without a trainer, except in
the last two tests (a real GRPOTrainer on a tiny random policy built in code)."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("trl")

from laser.integrations.trl import RMRouter  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_chat_reliability.py"
spec = importlib.util.spec_from_file_location("trl_chat_reliability", EXAMPLE)
ex = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ex)

G = 4  # completions per prompt
OPTIONS = {"anchor": "generalist", "warmup": 8, "min_votes": 20}


class Flat:
    """An RM that gives every completion the same score: it ties every pair, so it always abstains."""

    name = "flat"

    def score(self, prompts, responses):
        return np.zeros(len(responses))


def make_router(rms, training=True, **kw):
    kw.setdefault("selector_options", OPTIONS)
    router = RMRouter(rms, selector="reliability", group_column="domain", **kw)
    router.setup(G, G, model=SimpleNamespace(training=training))
    return router


def rounds(n, prompts=4, seed=0):
    """``n`` rounds of chat rows: ``prompts`` prompts (domains alternating) x G distinct completions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rows = {"prompts": [], "completions": [], "domain": []}
        for j in range(prompts):
            d = ex.DOMAINS[j % 2]
            msg = [{"role": "user", "content": ex.chat_prompt(d, ex.TOPICS[d][int(rng.integers(5))])}]
            for _ in range(G):
                rows["prompts"].append(msg)
                rows["completions"].append([{"role": "assistant", "content": f"{int(rng.integers(2**40)):x}"}])
                rows["domain"].append(d)
        out.append(rows)
    return out


def serve(router, rows, lo=0, hi=None):
    """Call every reward function once on rows[lo:hi] (one rank's share), as TRL does."""
    kw = dict(completion_ids=None, trainer_state=SimpleNamespace(global_step=0), log_extra=None, log_metric=None)
    part = {k: v[lo:hi] for k, v in rows.items()}
    return [
        f(prompts=part["prompts"], completions=part["completions"], domain=part["domain"], **kw)
        for f in router.reward_funcs
    ]


def best_by_construction():
    """Each domain's most accurate RM against ``q``, measured on random text pairs."""
    truth = {rm.name: ex.true_accuracy(rm) for rm in ex.make_rms()}
    return {d: max(truth, key=lambda n: truth[n][d]) for d in ex.DOMAINS}


def test_the_constructed_rms_have_a_known_best_rm_per_domain():
    """The experts' weight 0.9 on their own domain beats the generalist's 0.55 (pairwise accuracy
    about 0.97 vs 0.79, measured on 4000 random pairs); the contrarian is below chance (about 0.19)."""
    truth = {rm.name: ex.true_accuracy(rm) for rm in ex.make_rms()}
    assert best_by_construction() == {"advice": "helpful_advice", "code": "helpful_code"}
    assert all(
        truth["contrarian"][d] < 0.3 < 0.7 < truth["generalist"][d] < 0.9 < truth[f"helpful_{d}"][d] for d in ex.DOMAINS
    )


def test_router_learns_each_domains_best_rm_from_agreement_alone():
    """40 rounds of 4 chat prompts x 4 completions, no answer and no task column: probes collect
    votes, each domain gets estimates, its routed RM is the one built best; the flat RM ties every
    pair and is never estimated; each row's reward comes from its prompt's RM only; the RM work is
    every row once plus (K - 1) x G rows per probe prompt (K = 5 RMs, all up), under K per row."""
    rms = [*ex.make_rms(), Flat()]
    router = make_router(rms)
    data = rounds(40)
    for rows in data:
        out = serve(router, rows)
        given = np.array([[v is not None for v in col] for col in out])
        assert (given.sum(0) == 1).all()  # one RM's reward per row, None from the others
        arms = np.repeat(router.history_[-1]["arms"], G)
        assert (given.argmax(0) == arms).all()
        k0 = int(arms[0])
        prompt, text = rows["prompts"][0][0]["content"], rows["completions"][0][0]["content"]
        assert out[k0][0] == pytest.approx(float(rms[k0].score([prompt], [text])[0]))
    rel = router.selector
    votes = sum(sum(rec["votes"].values()) for rec in router.history_)
    probes = sum(rec["probes"] for rec in router.history_)
    assert votes >= 2 * 8 * 6 and probes >= 16  # warm-up: 8 probe prompts per domain, 6 pairs each
    rows_total = 40 * 4 * G
    assert router.responses_scored_.sum() == rows_total + (len(rms) - 1) * G * probes
    assert router.responses_scored_.sum() / rows_total < len(rms)
    for d, expert in best_by_construction().items():
        g = rel.groups_[d]
        assert g.ok and g.acc is not None and g.sign_source == "anchor"
        assert g.acc[4] is None and not any(g.votes[4])  # flat: every vote abstains
        assert router.names[rel.best(d)[0]] == expert and rel.best(d)[1] == "estimate"
    assert router.selection_table(last_fraction=1 / 4) == {
        d: {n: float(n == e) for n in router.names} for d, e in best_by_construction().items()
    }


def test_labelled_pairs_fix_the_sign_where_the_majority_rule_fails():
    """Three strong contrarians (weight 0.85 on -q: accuracy about 0.05) outweigh the others, so the
    label-free rule "accuracies above chance on average" flips the sign and routes each domain to a
    contrarian (the documented failure, flagged ``majority``); three labelled pairs per domain,
    scored once by every RM at set-up, give the right sign and the built expert."""

    def rms():
        extra = [ex.HiddenPreferenceRM(f"contrarian{i}", {"advice": 0.85, "code": 0.85}, -1.0) for i in (2, 3)]
        return [*ex.make_rms(), *extra]

    options = {"warmup": 8, "min_votes": 20}
    rng = np.random.default_rng(5)
    labelled = {}
    for d in ex.DOMAINS:
        prompt = ex.chat_prompt(d, ex.TOPICS[d][0])
        pairs = []
        while len(pairs) < 3:
            a, b = (f"{int(x):x}" for x in rng.integers(0, 2**40, 2))
            better, worse = (a, b) if ex.quality(prompt, a) > ex.quality(prompt, b) else (b, a)
            pairs.append((prompt, better, worse))
        labelled[d] = pairs
    free = make_router(rms(), selector_options=options)
    fixed = make_router(rms(), selector_options=options, labelled_pairs=labelled)
    assert fixed.responses_scored_.tolist() == [2 * 3 * 2] * 6  # 2 domains x 3 pairs x 2 texts, once
    for rows in rounds(30, seed=1):
        serve(free, rows)
        serve(fixed, rows)
    for d, expert in best_by_construction().items():
        assert free.selector.groups_[d].sign_source == "majority"
        assert free.names[free.selector.best(d)[0]].startswith("contrarian")
        assert fixed.selector.groups_[d].sign_source == "labels"
        assert fixed.names[fixed.selector.best(d)[0]] == expert
        assert np.asarray(fixed.selector.groups_[d].labelled).shape == (6, 3)


def test_one_group_by_default_and_no_probes_in_evaluation():
    """Without group_column every prompt is in the group "all"; an evaluation round (model in
    eval mode) neither probes nor learns: each row is scored once."""
    router = RMRouter(ex.make_rms(), selector="reliability", selector_options=OPTIONS)
    router.setup(G, G, model=SimpleNamespace(training=True))
    for rows in rounds(3):
        serve(router, rows)
    assert set(router.selector.groups_) == {"all"} and router.history_[0]["probes"] == 4
    state = str(router.state_dict()["strategy"]["router"])
    evaluating = make_router(ex.make_rms(), training=False)
    for rows in rounds(3):
        serve(evaluating, rows)
    assert evaluating.responses_scored_.sum() == 3 * 4 * G and evaluating.eval_rounds_ == 3
    assert not evaluating.history_ and not evaluating.selector.groups_.get("advice", SimpleNamespace(votes=[])).votes
    assert str(router.state_dict()["strategy"]["router"]) == state  # the learning router untouched


def test_state_survives_a_checkpoint_and_continues_identically(tmp_path):
    """20 rounds, save, a fresh router loads the checkpoint; both serve the same 10 more rounds:
    identical history and reliability state."""
    data = rounds(30, seed=2)
    first = make_router(ex.make_rms())
    for rows in data[:20]:
        serve(first, rows)
    first.save(str(tmp_path / "checkpoint-20"), 20)
    second = make_router(ex.make_rms())
    second.load(str(tmp_path / "checkpoint-20"), expect_step=20)
    assert str(second.state_dict()["strategy"]["router"]) == str(first.state_dict()["strategy"]["router"])
    assert second.responses_scored_.tolist() == first.responses_scored_.tolist()
    for rows in data[20:]:
        serve(first, rows)
        serve(second, rows)
    assert second.history_ == first.history_ and len(first.history_) == 30
    assert str(second.state_dict()["strategy"]["router"]) == str(first.state_dict()["strategy"]["router"])


class Breaks:
    """Wraps an RM; raises from its ``after``-th call on (an outage)."""

    def __init__(self, rm, after):
        self.rm, self.name, self.after, self.calls = rm, rm.name, after, 0

    def score(self, prompts, responses):
        self.calls += 1
        if self.calls >= self.after:
            raise RuntimeError("connection refused")
        return self.rm.score(prompts, responses)


def test_a_failing_rm_is_masked_and_the_others_keep_routing_and_learning():
    """helpful_code fails from its 4th call (round 3, a warm-up round): it is masked (an event),
    the round is routed again without it with the same probes (the warm-up is not cut short),
    its later votes abstain, and the code domain goes to the best RM that is up (the generalist;
    helpful_advice is weak there); advice keeps its expert."""
    rms = ex.make_rms()
    rms[1] = Breaks(rms[1], after=4)
    router = make_router(rms)
    for rows in rounds(40, seed=4):
        out = serve(router, rows)
        assert all(sum(col[i] is not None for col in out) == 1 for i in range(len(out[0])))
    assert router.down_ and 1 in router.down_ and "connection refused" in router.down_[1]
    rel = router.selector
    assert rel.best("advice") == (0, "estimate")
    assert router.names[rel.best("code")[0]] == "generalist"
    before = sum(rec["votes"].get("code", 0) for rec in router.history_[:3])
    assert [rec["probes"] for rec in router.history_[:4]] == [4, 4, 4, 4]  # warm-up: 8 per domain
    votes = rel.groups_["code"].votes[1]
    assert all(votes[:before]) and len(votes) > before + 30 and not any(votes[before:])  # abstains once masked


class ThreadCollectives:
    """In-memory collectives for two threads (torch.distributed's semantics)."""

    def __init__(self, shared, rank):
        self.shared, self.rank, self.world = shared, rank, len(shared["slots"])

    @property
    def is_main(self):
        return self.rank == 0

    def all_gather(self, obj):
        self.shared["slots"][self.rank] = obj
        self.shared["barrier"].wait()
        out = list(self.shared["slots"])
        self.shared["barrier"].wait()
        return out

    def broadcast(self, obj, src=0):
        return self.all_gather(obj)[src]

    def sum(self, values):
        return [float(sum(col)) for col in zip(*self.all_gather(list(values)), strict=True)]


def test_two_processes_hold_the_single_process_router():
    """3 prompts x 4 completions per round split 6/6 over two ranks (the middle prompt straddles
    them), 30 rounds: the ranks gather groups to decide and the probes' scores to learn, so both
    hold the same history and reliability state as one process serving every row; each rank's RMs
    score only its own rows; the counters hold both ranks' work."""
    data = rounds(30, prompts=3, seed=3)
    single = make_router(ex.make_rms())
    for rows in data:
        serve(single, rows)
    shared = {"slots": [None, None], "barrier": threading.Barrier(2)}
    rms = [ex.make_rms() for _ in range(2)]
    routers = [make_router(rms[r]) for r in range(2)]
    for r, router in enumerate(routers):
        router._dist = ThreadCollectives(shared, r)
    errors = []

    def worker(r):
        try:
            for rows in data:
                serve(routers[r], rows, 6 * r, 6 * r + 6)
        except Exception as exc:  # surfaced below
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert routers[0].history_ == routers[1].history_ == single.history_
    states = [str(rt.state_dict()["strategy"]["router"]) for rt in (single, *routers)]
    assert states[0] == states[1] == states[2]
    local = [sum(rm.rows for rm in rms[r]) for r in range(2)]
    assert sum(local) == single.responses_scored_.sum() == routers[0].responses_scored_.sum()
    assert all(n > 30 * 6 for n in local)  # each rank: its 6 rows per round, plus its probe rows


def test_bad_settings_are_refused_before_training():
    rms = ex.make_rms()
    with pytest.raises(ValueError, match="feedback 'pair_accuracy' is not used by selector='reliability'"):
        RMRouter(rms, selector="reliability", feedback="pair_accuracy")
    with pytest.raises(ValueError, match="unknown reward model 'nope'"):
        RMRouter(rms, selector="reliability", selector_options={"anchor": "nope"})
    with pytest.raises(ValueError, match=r"selector_options \['alpha'\] are not options"):
        RMRouter(rms, selector="reliability", selector_options={"alpha": 1.0})
    with pytest.raises(ValueError, match="at least three reward models"):
        RMRouter(rms[:2], selector="reliability")
    with pytest.raises(ValueError, match="only apply to selector='reliability'"):
        RMRouter(rms, selector="exp3", group_column="domain")
    with pytest.raises(ValueError, match=r"labelled_pairs\['advice'\]\[0\]"):
        RMRouter(rms, selector="reliability", labelled_pairs={"advice": [("p", "same", "same")]})
    router = RMRouter(rms, selector="reliability", group_column="topic")
    with pytest.raises(ValueError, match=r"no column\(s\) \['topic'\]"):
        router.check_dataset(ex.chat_dataset(2, 2, 0))
    RMRouter(rms, selector="reliability", group_column="domain").check_dataset(ex.chat_dataset(2, 2, 0))


# ---------------------------------------------------------------- a real GRPOTrainer
def args(**over):
    return ex.parse(["--rounds", "24", "--prompts", "4", "--generations", str(G), *over.get("argv", [])])


def test_grpo_on_chat_prompts_finds_each_domains_best_rm(tmp_path):
    """The example's run, shortened to 24 rounds: GRPO on conversational prompts with no answer
    column; the router collects votes, estimates both domains and routes each to the RM built
    best, at fewer RM calls per completion than every RM (K = 4)."""
    a = args()
    model = ex.tiny_chat_model(str(tmp_path / "policy"))
    rms = ex.make_rms()
    router = ex.make_router(a, rms)
    ex.train(a, model, router.reward_funcs, [router], str(tmp_path / "out"))
    result = ex.report(a, router, rms, {"router": ex.calls_per_completion(router.responses_scored_.sum(), a)})
    assert len(router.history_) == 24 and result["votes"] > 0
    assert result["chosen"] == best_by_construction()
    assert all(router.selector.groups_[d].acc is not None for d in ex.DOMAINS)
    assert 1.0 < result["costs"]["router"] < len(rms)


def test_grpo_resume_from_a_checkpoint_repeats_the_run(tmp_path):
    """24 rounds with checkpoints every 8 steps; a fresh trainer and router resumed from
    checkpoint-8 repeat rounds 8-23 exactly: same arms, probes, votes and reliability state."""
    a = args()
    model = ex.tiny_chat_model(str(tmp_path / "policy"))
    save = dict(save_strategy="steps", save_steps=8)
    full = ex.make_router(a, ex.make_rms())
    ex.train(a, model, full.reward_funcs, [full], str(tmp_path / "out"), **save)
    resumed = ex.make_router(a, ex.make_rms())
    ex.train(
        a,
        model,
        resumed.reward_funcs,
        [resumed],
        str(tmp_path / "out"),
        resume=str(tmp_path / "out" / "checkpoint-8"),
        **save,
    )
    assert resumed.history_ == full.history_ and len(full.history_) == 24
    assert str(resumed.state_dict()["strategy"]["router"]) == str(full.state_dict()["strategy"]["router"])
    assert resumed.responses_scored_.tolist() == full.responses_scored_.tolist()


def test_labelled_pairs_from_a_jsonl_path(tmp_path):
    """``labelled_pairs`` as the path of a JSONL file: the same votes as the mapping form (a line
    without ``group`` is in ``"all"``), each RM scores each text once; a bad line is named by file
    and line when the router is built."""
    import json

    rng = np.random.default_rng(5)
    labelled = {}
    for d in ex.DOMAINS:
        prompt = ex.chat_prompt(d, ex.TOPICS[d][0])
        a, b = (f"{int(x):x}" for x in rng.integers(0, 2**40, 2))
        labelled[d] = [(prompt, a, b), (prompt, b, a)]
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": p, "chosen": c, "rejected": r, "group": g} for g, v in labelled.items() for p, c, r in v]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    by_path = make_router(ex.make_rms(), labelled_pairs=str(path))
    by_dict = make_router(ex.make_rms(), labelled_pairs=labelled)
    for d in ex.DOMAINS:
        assert by_path.selector.groups_[d].labelled == by_dict.selector.groups_[d].labelled
        assert all(row[0] == -row[1] for row in by_path.selector.groups_[d].labelled)  # the same pair, swapped
    assert by_path.responses_scored_.tolist() == [2 * 2 * 2] * 4
    path.write_text(json.dumps({"prompt": "p", "chosen": "x", "rejected": "y"}) + "\n")
    assert RMRouter(ex.make_rms(), selector="reliability", labelled_pairs=str(path)).labelled_pairs == {
        "all": [("p", "x", "y")]
    }
    path.write_text(json.dumps({"prompt": "p", "chosen": "x", "rejected": "y"}) + "\n{}\n")
    with pytest.raises(ValueError, match=r"RMRouter: labelled_pairs: .*pairs.jsonl:2: field 'prompt' is missing"):
        RMRouter(ex.make_rms(), selector="reliability", labelled_pairs=str(path))


def test_a_resumed_run_does_not_score_the_labelled_pairs_again(tmp_path):
    """``on_train_begin`` at step 3 of a checkpoint: the router loads the state (which holds the
    labelled votes) and none of its RMs scores anything; the state equals the saved one."""
    labelled = {d: [(ex.chat_prompt(d, ex.TOPICS[d][0]), "a1", "b2")] for d in ex.DOMAINS}
    first = make_router(ex.make_rms(), labelled_pairs=labelled)
    for rows in rounds(3):
        serve(first, rows)
    first.save(str(tmp_path / "checkpoint-3"), 3)
    rms = ex.make_rms()
    second = RMRouter(
        rms, selector="reliability", group_column="domain", selector_options=OPTIONS, labelled_pairs=labelled
    )
    args = SimpleNamespace(
        num_generations=G,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        save_strategy="no",
        save_steps=0,
        output_dir=str(tmp_path),
    )
    second.on_train_begin(args, SimpleNamespace(global_step=3), None, model=SimpleNamespace(training=True))
    assert [rm.rows for rm in rms] == [0] * 4
    assert str(second.state_dict()["strategy"]["router"]) == str(first.state_dict()["strategy"]["router"])
    assert second.selector.groups_["advice"].labelled == first.selector.groups_["advice"].labelled != []
