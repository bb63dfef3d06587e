"""Label-free routing inside TRL: GRPO on chat prompts without gold answers, the RM per domain
chosen by each RM's reliability estimated from the RMs' agreement (``selector="reliability"``).

Runs offline on CPU in well under a minute: a tiny randomly initialised character-level policy
(built in code, with a one-line chat template; ``--model`` takes a real HF model folder), chat
prompts of two domains (``advice``, ``code``) with no answer column, and four reward models built
so the right answer is known: a hidden true preference ``q(prompt, completion)`` and

* ``helpful_advice``: mostly ``q`` on advice prompts, mostly noise on code prompts;
* ``helpful_code``: the mirror image;
* ``generalist``: ``q`` plus more noise everywhere, the anchor (better than chance everywhere);
* ``contrarian``: ``-q`` plus noise (worse than chance everywhere).

The best RM of each domain is that domain's helpful RM (:func:`true_accuracy` measures it from
``q``). Probe prompts are scored by every RM; their completions' pairs become votes; the label
model estimates each RM's accuracy per domain; every other prompt is scored by its domain's best
RM only. ``--compare`` also runs TRL's plain set-ups (every RM on every completion, and one RM)
for the RM calls per completion::

    OMP_NUM_THREADS=1 python examples/trl_chat_reliability.py --compare

Needs ``pip install 'laser-rm[trl]'``.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile

import numpy as np

DOMAINS = ("advice", "code")
TOPICS = {
    "advice": ["sleeping better", "a job interview", "saving money", "learning a language", "moving city"],
    "code": ["reverses a string", "sums a list", "finds the maximum", "counts vowels", "checks a palindrome"],
}
ANCHOR = "generalist"
#: RM -> (weight of the hidden preference per domain, its sign); the rest of the score is noise
RM_SPECS = {
    "helpful_advice": ({"advice": 0.9, "code": 0.4}, 1.0),
    "helpful_code": ({"advice": 0.4, "code": 0.9}, 1.0),
    "generalist": ({"advice": 0.55, "code": 0.55}, 1.0),
    "contrarian": ({"advice": 0.6, "code": 0.6}, -1.0),
}
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'][0] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}a: {% endif %}"
)


def chat_prompt(domain: str, topic: str) -> str:
    return f"Give me advice on {topic}." if domain == "advice" else f"Write a function that {topic}."


def domain_of(prompt: str) -> str:
    return "advice" if prompt.startswith("Give me advice") else "code"


def _unit(*parts: str) -> float:
    """A deterministic uniform number in [0, 1) from strings (blake2b)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def quality(prompt: str, completion: str) -> float:
    """The hidden true preference: a completion is better than another when its ``q`` is higher."""
    return _unit("q", prompt, completion)


class HiddenPreferenceRM:
    """``sign * w[domain] * q + (1 - w[domain]) * noise``, noise a deterministic hash of the
    RM's name, the prompt and the completion (the same text always gets the same score)."""

    def __init__(self, name: str, weights: dict, sign: float = 1.0):
        self.name, self.weights, self.sign = name, dict(weights), float(sign)
        self.rows = self.calls = 0

    def score(self, prompts, responses):
        self.rows += len(responses)
        self.calls += 1
        out = []
        for p, r in zip(prompts, responses, strict=True):
            w = self.weights[domain_of(p)]
            out.append(self.sign * w * quality(p, r) + (1 - w) * _unit(self.name, p, r))
        return np.array(out, dtype=np.float64)


def make_rms() -> list[HiddenPreferenceRM]:
    return [HiddenPreferenceRM(name, w, sign) for name, (w, sign) in RM_SPECS.items()]


def true_accuracy(rm, n: int = 4000, seed: int = 0) -> dict[str, float]:
    """Each domain's pairwise accuracy of ``rm`` against ``q`` on random text pairs (the truth the
    router should find, measured independently of it)."""
    rng = np.random.default_rng(seed)
    out = {}
    for d in DOMAINS:
        prompt = chat_prompt(d, TOPICS[d][0])
        a = [f"{x:x}" for x in rng.integers(0, 2**40, n)]
        b = [f"{x:x}" for x in rng.integers(0, 2**40, n)]
        sa, sb = rm.score([prompt] * n, a), rm.score([prompt] * n, b)
        qa = np.array([quality(prompt, t) for t in a])
        qb = np.array([quality(prompt, t) for t in b])
        out[d] = float(np.mean(np.sign(sa - sb) == np.sign(qa - qb)))
    return out


def chat_dataset(rounds: int, prompts_per_round: int, seed: int):
    """Conversational prompts (a user turn each), no answer column, a ``domain`` column; every
    round mixes both domains."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(rounds * prompts_per_round):
        d = DOMAINS[i % len(DOMAINS)]
        topic = TOPICS[d][int(rng.integers(len(TOPICS[d])))]
        rows.append({"prompt": [{"role": "user", "content": chat_prompt(d, topic)}], "domain": d})
    return Dataset.from_list(rows)


def tiny_chat_model(folder: str, seed: int = 0) -> str:
    """A tiny random character-level Llama with a chat template, saved to ``folder``."""
    from laser.bench.policy import make_char_tokenizer, make_tiny_model

    tok = make_char_tokenizer("left")
    tok.chat_template = CHAT_TEMPLATE
    make_tiny_model(tok, hidden=32, layers=1, heads=2, seed=seed).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def grpo_config(args, out_dir: str, **over):
    from trl import GRPOConfig

    settings = dict(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to=[],
        per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations,
        gradient_accumulation_steps=1,
        max_steps=args.rounds,
        shuffle_dataset=False,
        max_completion_length=12,
        temperature=1.0,
        learning_rate=1e-5,
        beta=0.0,
        seed=args.seed,
        logging_steps=max(1, args.rounds // 4),
        save_strategy="no",
        disable_tqdm=True,
    )
    settings.update(over)
    return GRPOConfig(**settings)


def train(args, model_dir: str, reward_funcs, callbacks, out_dir: str, resume=None, **over):
    """One GRPO run; returns the trainer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer

    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=grpo_config(args, out_dir, **over),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        reward_funcs=reward_funcs,
        train_dataset=chat_dataset(args.rounds, args.prompts, args.seed),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def make_router(args, rms):
    from laser.integrations.trl import RMRouter

    return RMRouter(
        rms,
        selector="reliability",
        selector_options={"anchor": ANCHOR, "warmup": args.warmup, "min_votes": args.min_votes, "probe_share": 0.1},
        group_column="domain",
        seed=args.seed,
    )


def plain_reward(rm):
    """TRL's usual reward function for one RM: it scores every completion."""

    def reward(prompts, completions, **kwargs):
        from laser.integrations.context import completion_text, prompt_text

        return [
            float(s) for s in rm.score([prompt_text(p) for p in prompts], [completion_text(c) for c in completions])
        ]

    reward.__name__ = rm.name
    return reward


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=40, help="GRPO steps = generation rounds")
    p.add_argument("--prompts", type=int, default=4, help="prompts per round (both domains)")
    p.add_argument("--generations", type=int, default=4, help="completions per prompt")
    p.add_argument("--warmup", type=int, default=8, help="probe prompts per domain before routing")
    p.add_argument("--min-votes", type=int, default=20, help="votes an RM needs in a domain to be estimated")
    p.add_argument("--model", default=None, help="an HF model folder with a chat template (default: tiny, built here)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="store_true", help="also run every RM on every completion, and one RM")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    import torch

    from laser.integrations.trl import require_trl

    require_trl()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or tiny_chat_model(f"{tmp}/policy", args.seed)
        rms = make_rms()
        router = make_router(args, rms)
        train(args, model_dir, router.reward_funcs, [router], f"{tmp}/router")
        costs = {"reliability router": calls_per_completion(router.responses_scored_.sum(), args)}
        if args.compare:
            every = make_rms()
            train(args, model_dir, [plain_reward(rm) for rm in every], [], f"{tmp}/every")
            costs[f"every RM (K = {len(every)})"] = calls_per_completion(sum(rm.rows for rm in every), args)
            one = make_rms()[2:3]
            train(args, model_dir, [plain_reward(rm) for rm in one], [], f"{tmp}/one")
            costs[f"one RM ({one[0].name})"] = calls_per_completion(sum(rm.rows for rm in one), args)
    return report(args, router, rms, costs)


def calls_per_completion(rows: int, args) -> float:
    return float(rows) / (args.rounds * args.prompts * args.generations)


def report(args, router, rms, costs: dict) -> dict:
    strategy = router.core.strategy
    truth = {rm.name: true_accuracy(rm) for rm in rms}
    print(f"\n{'domain':<8}{'routed to':>16}{'status':>10}{'sign':>8}  estimated (true) pairwise accuracy")
    chosen = {}
    for d in DOMAINS:
        arm, status = strategy.selector.best(d)
        g = strategy.selector.groups_[d]
        chosen[d] = router.names[arm]
        est = "  ".join(
            f"{n} {'-' if a is None else f'{a:.2f}'} ({truth[n][d]:.2f})"
            for n, a in zip(router.names, g.acc or [None] * 4, strict=True)
        )
        print(f"{d:<8}{chosen[d]:>16}{status:>10}{g.sign_source:>8}  {est}")
    votes = sum(sum(rec["votes"].values()) for rec in router.history_)
    probes = sum(rec["probes"] for rec in router.history_)
    print(f"\n{probes} probe prompts, {votes} votes over {args.rounds} rounds")
    print("RM calls per completion: " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()))
    return {"chosen": chosen, "truth": truth, "votes": votes, "probes": probes, "costs": costs, "router": router}


if __name__ == "__main__":
    main()
