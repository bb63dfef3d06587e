"""The labelled split that trains the classifier-selection baseline.

For held-out train-split prompts of the embedded benchmark (drawn after the prompts used for
training, so disjoint from them and from the test split), each RM scores a known preference
pair: the gold worked response against ``wrong_response``. The margin of RM k on prompt i is
``m_ki = s_k(gold_i) - s_k(wrong_i)``. Margins are standardised per RM over the split by
dividing by that RM's standard deviation of margins (no centring, so the sign, i.e. whether the
RM orders the pair correctly, is kept): RMs on different scales (a length in characters, a
probability) become comparable. The label of prompt i is the RM with the largest standardised
margin among those that order the pair correctly; a prompt no RM orders correctly gets no label.
The context is the SFT policy's last-token hidden state of the prompt.
"""

from __future__ import annotations

import numpy as np


def margin_labels(margins: np.ndarray) -> np.ndarray:
    """Label per prompt from a ``(K, M)`` margin matrix (see the module docstring); -1 = no label.

    Example: margins ``[[0.5, -1.0], [2.0, 1.0]]`` have per-RM standard deviations 0.75 and
    0.5, standardised ``[[0.667, -1.333], [4.0, 2.0]]``, so both prompts get label 1.
    """
    m = np.asarray(margins, dtype=np.float64)
    sd = m.std(axis=1, keepdims=True)
    z = m / np.where(sd > 0, sd, 1.0)
    z = np.where(m > 0, z, -np.inf)  # only RMs that order the pair correctly compete
    labels = np.argmax(z, axis=0)
    return np.where(np.isfinite(z.max(axis=0)), labels, -1)


def labelled_split(
    policy_dir: str, rms: list, n_train_per_domain: int, n_label_per_domain: int, seed: int, benchmark: str = "v1"
) -> dict:
    """Contexts and labels for :meth:`ClassifierSelector.fit` on held-out train-split prompts.

    Returns:
        ``{"contexts": (M, d), "labels": (M,), "domains": [str] * M, "label_share":
        {domain: {rm: share}}, "unlabelled": int}``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser.bench.tasks import make_benchmark, worked_response, wrong_response
    from laser.policy.model import Policy

    pool = make_benchmark(n_train_per_domain + n_label_per_domain, seed=seed, split="train", version=benchmark)
    style = "v1" if benchmark == "v1" else "worked"  # the responses the benchmark's SFT start writes
    n = n_train_per_domain + n_label_per_domain
    held = [ex for i, ex in enumerate(pool) if i % n >= n_train_per_domain]  # after the training prompts
    rng = np.random.default_rng([seed, 17])
    prompts = [ex.prompt for ex in held]
    gold = [worked_response(ex.prompt, style=style) for ex in held]
    wrong = [wrong_response(ex, rng, style) for ex in held]
    margins = np.stack([np.asarray(rm.score(prompts, gold)) - np.asarray(rm.score(prompts, wrong)) for rm in rms])
    labels = margin_labels(margins)
    keep = labels >= 0
    tok = AutoTokenizer.from_pretrained(policy_dir)
    tok.padding_side = "left"
    contexts = Policy(AutoModelForCausalLM.from_pretrained(policy_dir), tok).context(prompts)
    names = [rm.name for rm in rms]
    share = {}
    for d in sorted({ex.group for ex in held}):
        mine = labels[[ex.group == d for ex in held] & keep]
        share[d] = {nm: float(np.mean(mine == k)) if mine.size else 0.0 for k, nm in enumerate(names)}
    return {
        "contexts": contexts[keep],
        "labels": labels[keep],
        "domains": [ex.group for ex, k in zip(held, keep, strict=True) if k],
        "label_share": share,
        "unlabelled": int((~keep).sum()),
    }
