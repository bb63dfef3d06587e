"""Best-of-n with a per-prompt bandit, and policy evaluation."""

import json

import numpy as np

from laser.bon import format_bon, run_bon
from laser.config import load_config
from laser.evaluation import best_index, evaluate_policy
from laser.policy.model import Samples
from laser.rewards.base import CallableRM
from laser.tasks.base import Example


class ScriptedPolicy:
    """Samples 'The answer is 1' .. 'The answer is n'; context = one-hot of the prompt's domain."""

    def context(self, prompts):
        return np.array([[1.0, 0.0] if p.startswith("A") else [0.0, 1.0] for p in prompts])

    def sample(self, prompts, n, temperature, top_p, max_new_tokens, seed):
        texts = [f"The answer is {k + 1}" for _ in prompts for k in range(n)]
        return Samples(
            [i for i in range(len(prompts)) for _ in range(n)], texts, [[0]] * len(texts), [[0]] * len(prompts)
        )


def expert(domain):
    """Knows the answer (2) on its own domain; elsewhere prefers the largest number."""

    def score(prompt, response):
        value = int(response.rsplit(" ", 1)[1])
        if prompt.startswith(domain):
            return 1.0 if value == 2 else 0.0
        return float(value)

    return CallableRM(score, name=f"expert_{domain}")


def test_bon_bandit_learns_which_rm_fits_which_prompt(tmp_path):
    examples = [Example(id=str(i), prompt=f"{'AB'[i % 2]} q{i}", answer="2", task="gsm8k") for i in range(200)]
    cfg = load_config(
        data={
            "output_dir": str(tmp_path),
            "rewards": [{"name": "a", "type": "length"}],
            "selector": {"name": "linucb", "alpha": 0.1},
            "train": {"n_samples": 4, "batch_size": 10},
        },
        require_data=False,
    )
    result = run_bon(cfg, ScriptedPolicy(), [expert("A"), expert("B")], examples, show_progress=False)
    m = result["methods"]
    assert m["single:expert_A"]["accuracy"] == 0.5 and m["single:expert_B"]["accuracy"] == 0.5
    assert m["oracle"]["accuracy"] == 1.0
    assert m["bandit"]["accuracy"] > 0.9 > 0.6 > m["random"]["accuracy"]  # random: 0.5 in expectation
    assert m["score_ensemble"]["responses_scored"] == 2 * m["bandit"]["responses_scored"] == 2 * 200 * 4
    # no double scoring: the comparison reuses the routed scores, so each RM scored each response once
    assert result["pool"]["responses_scored"] == [200 * 4, 200 * 4]
    assert result["pool"]["score_calls"] == [2 * 20, 2 * 20]  # 20 batches: the routed call + the comparison call
    assert json.loads((tmp_path / "bon_results.json").read_text())["metric"] == "accuracy"
    table = format_bon(result)
    assert "bandit" in table and "headroom %" in table
    oracle_row = next(line for line in table.splitlines() if line.startswith("oracle"))
    assert oracle_row.split()[-1] == "100"  # (oracle - random) / (oracle - random)


def test_best_index_skips_nan_and_handles_all_nan():
    assert best_index(np.array([np.nan, 0.2, 0.9, 0.9])) == 2
    assert best_index(np.array([np.nan, np.nan])) is None


def test_evaluate_policy_groups_and_macro_average():
    class Fixed:
        def generate(self, prompts, max_new_tokens, batch_size=32):
            return ["The answer is 3" if "x" in p else "The answer is no" for p in prompts]

    exs = [
        Example("1", "x1", "3", "gsm8k", "arith"),
        Example("2", "x2", "4", "gsm8k", "arith"),
        Example("3", "y", "no", "strategyqa", "yn"),
    ]
    out = evaluate_policy(Fixed(), exs, show_progress=False)
    assert out["accuracy"] == {"arith": 0.5, "yn": 1.0, "average": 0.75}
    assert out["correct"] == [True, False, True]


def bon_cfg(tmp_path, selector="linucb"):
    return load_config(
        data={
            "output_dir": str(tmp_path),
            "rewards": [{"name": "a", "type": "length"}],
            "selector": {"name": selector},
            "train": {"n_samples": 4, "batch_size": 10},
        },
        require_data=False,
    )


def test_bon_isolates_any_rm_exception_and_names_every_rm_when_all_are_down(tmp_path):
    """An RM with a bug (ValueError) is masked at its first call; best-of-n finishes on the other RM
    (the event is reported); with every RM broken the run stops naming both."""
    import pytest

    from laser.routing import AllRewardModelsDown

    def buggy(prompt, response):
        raise ValueError("bad tokenizer")

    examples = [Example(id=str(i), prompt=f"{'AB'[i % 2]} q{i}", answer="2", task="gsm8k") for i in range(20)]
    rms = [CallableRM(buggy, name="buggy"), expert("B")]
    result = run_bon(bon_cfg(tmp_path, "round_robin"), ScriptedPolicy(), rms, examples, show_progress=False)
    assert result["selection"] == {"buggy": 0.0, "expert_B": 1.0}
    assert any("'buggy' failed and is masked" in e and "ValueError: bad tokenizer" in e for e in result["events"])
    with pytest.raises(AllRewardModelsDown, match="buggy: .*ValueError.*; other: .*ValueError"):
        run_bon(
            bon_cfg(tmp_path),
            ScriptedPolicy(),
            [CallableRM(buggy, name="buggy"), CallableRM(buggy, name="other")],
            examples,
            show_progress=False,
        )


def test_bon_never_picks_an_unscorable_response(tmp_path):
    """An RM scoring NaN for 'The answer is 4' (and preferring larger numbers otherwise) picks 3, never 4."""
    nan4 = CallableRM(lambda p, r: float("nan") if r.endswith("4") else float(r[-1]), name="nan4")
    examples = [Example(id=str(i), prompt=f"q{i}", answer="3", task="gsm8k") for i in range(10)]
    cfg = load_config(
        data={
            "output_dir": str(tmp_path),
            "rewards": [{"name": "nan4", "type": "length"}],
            "selector": {"name": "fixed", "arm": "nan4"},
            "train": {"n_samples": 4, "batch_size": 10},
        },
        require_data=False,
    )
    result = run_bon(cfg, ScriptedPolicy(), [nan4], examples, show_progress=False)
    assert result["methods"]["bandit"]["accuracy"] == 1.0  # the best scorable response is 3, the gold answer


def test_bon_reliability_probes_with_every_rm_and_routes_the_rest_to_the_groups_best(tmp_path):
    """Free-form prompts of two domains (no task, no answer) and examples/trl_chat_reliability.py's
    four RMs (a hidden preference; each domain's best RM known by construction). 160 prompts x 4
    random completions in mini-batches of 8: the probe prompts' votes teach the router, which
    routes each domain to its built expert; the routed work is every response once plus
    (K - 1) x 4 per probe prompt (under K = 4 per response); the comparison still has every RM
    score every response exactly once."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "trl_chat_reliability.py"
    spec = importlib.util.spec_from_file_location("trl_chat_reliability", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)

    class RandomTexts:
        def sample(self, prompts, n, temperature, top_p, max_new_tokens, seed):
            rng = np.random.default_rng(seed)
            texts = [f"{int(x):x}" for x in rng.integers(0, 2**40, len(prompts) * n)]
            return Samples(
                [i for i in range(len(prompts)) for _ in range(n)], texts, [[0]] * len(texts), [[0]] * len(prompts)
            )

    examples = [
        Example(id=str(i), prompt=ex.chat_prompt(d, ex.TOPICS[d][i % 5]), answer="", task="", domain=d)
        for i in range(160)
        for d in [ex.DOMAINS[i % 2]]
    ]
    cfg = load_config(
        data={
            "output_dir": str(tmp_path),
            # the config names the example's RMs (the strategy checks its anchor at load); run_bon gets them built
            "rewards": [{"name": rm.name, "type": "length"} for rm in ex.make_rms()],
            "selector": {"name": "reliability", "kwargs": {"anchor": "generalist", "warmup": 8, "min_votes": 20}},
            "train": {"n_samples": 4, "batch_size": 8},
        },
        require_data=False,
    )
    rms = ex.make_rms()
    result = run_bon(cfg, RandomTexts(), rms, examples, show_progress=False)
    routing, m = result["routing"], result["methods"]
    assert {d: routing[d]["arm"] for d in ex.DOMAINS} == {"advice": "helpful_advice", "code": "helpful_code"}
    assert all(routing[d]["status"] == "estimate" and routing[d]["sign"] == "anchor" for d in ex.DOMAINS)
    probes = sum(routing[d]["probes"] for d in ex.DOMAINS)
    assert probes >= 16  # the warm-up: 8 probe prompts per domain
    assert m["bandit"]["responses_scored"] == 160 * 4 + 3 * 4 * probes
    assert 1 < m["bandit"]["per_response"] < len(rms) == m["score_ensemble"]["per_response"]
    assert result["pool"]["responses_scored"] == [160 * 4] * 4  # each RM scored each response once
    assert "reliability: group advice: RM helpful_advice (estimate, sign anchor)" in format_bon(result)


def test_bon_reliability_with_labelled_pairs_and_no_anchor(tmp_path):
    """examples/trl_chat_reliability.py's RMs plus two strong contrarians (weight 0.85 on -q), which
    turn the label-free majority sign (the documented failure, as in the TRL router's test); no
    anchor. ``selector.kwargs.labelled_pairs``: 3 pairs per domain (the higher-``q`` text chosen),
    scored once by each of the 6 RMs before the first prompt (2 x 6 = 12 responses each, in
    ``pool``, not in the bandit's routed cost): every group's sign comes from them and each domain
    is routed to its built expert (without the pairs: a contrarian)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "trl_chat_reliability.py"
    spec = importlib.util.spec_from_file_location("trl_chat_reliability", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)

    class RandomTexts:
        def sample(self, prompts, n, temperature, top_p, max_new_tokens, seed):
            rng = np.random.default_rng(seed)
            texts = [f"{int(x):x}" for x in rng.integers(0, 2**40, len(prompts) * n)]
            return Samples(
                [i for i in range(len(prompts)) for _ in range(n)], texts, [[0]] * len(texts), [[0]] * len(prompts)
            )

    def rms():
        extra = [ex.HiddenPreferenceRM(f"contrarian{i}", {"advice": 0.85, "code": 0.85}, -1.0) for i in (2, 3)]
        return [*ex.make_rms(), *extra]

    rng, rows = np.random.default_rng(5), []
    for d in ex.DOMAINS:
        prompt = ex.chat_prompt(d, ex.TOPICS[d][0])
        for _ in range(3):
            a, b = (f"{int(x):x}" for x in rng.integers(0, 2**40, 2))
            better, worse = (a, b) if ex.quality(prompt, a) > ex.quality(prompt, b) else (b, a)
            rows.append({"prompt": prompt, "chosen": better, "rejected": worse, "group": d})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = [
        Example(id=str(i), prompt=ex.chat_prompt(d, ex.TOPICS[d][i % 5]), answer="", task="", domain=d)
        for i in range(96)
        for d in [ex.DOMAINS[i % 2]]
    ]
    cfg = load_config(
        data={
            "output_dir": str(tmp_path),
            "rewards": [{"name": rm.name, "type": "length"} for rm in rms()],
            "selector": {
                "name": "reliability",
                "kwargs": {"warmup": 8, "min_votes": 20, "labelled_pairs": str(pairs)},
            },
            "train": {"n_samples": 4, "batch_size": 8},
        },
        require_data=False,
    )
    result = run_bon(cfg, RandomTexts(), rms(), examples, show_progress=False)
    routing, m = result["routing"], result["methods"]
    assert {d: routing[d]["arm"] for d in ex.DOMAINS} == {"advice": "helpful_advice", "code": "helpful_code"}
    assert all(routing[d]["sign"] == "labels" for d in ex.DOMAINS)
    assert result["labelled_pairs"]["pairs"] == {"advice": 3, "code": 3}
    assert result["labelled_pairs"]["scored"] == {rm.name: 12 for rm in rms()}
    probes = sum(routing[d]["probes"] for d in ex.DOMAINS)
    assert m["bandit"]["responses_scored"] == 96 * 4 + 5 * 4 * probes  # the routing's work only
    assert result["pool"]["responses_scored"] == [96 * 4 + 12] * 6  # every response once, the pairs once
    cfg.selector.kwargs.pop("labelled_pairs")  # the control: the majority sign picks a contrarian
    free = run_bon(cfg, RandomTexts(), rms(), examples, show_progress=False)["routing"]
    assert all(free[d]["sign"] == "majority" and free[d]["arm"].startswith("contrarian") for d in ex.DOMAINS)
