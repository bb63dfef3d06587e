"""Method names of `laser compare` and how each one is trained (one iteration range at a time).

Names: every `laser demo` method (``laser``, ``laser_per_prompt``, ``laser:<feedback>``,
``random``, ``round_robin``, ``score_ensemble``, ``agreement_ensemble``, ``single:<rm>``), plus
``online_ensemble`` (multiplicative-weights RM ensemble), ``classifier`` (offline classifier
selection) and ``laser@<selector>`` (LASeR with another bandit, e.g. ``laser@exp3``,
``laser@lints``, ``laser@sliding_linucb``).
"""

from __future__ import annotations

from pathlib import Path

from laser.bandits.factory import SELECTORS

NEW_METHODS = ("online_ensemble", "classifier", "laser@exp3", "laser@lints", "laser@sliding_linucb")
#: window of ``laser@sliding_linucb``: the bandit library's default (200 updates) is longer than the
#: demo's whole run (40 steps), which would make it plain LinUCB; 16 = two iterations of the demo.
SLIDING_WINDOW = 16
PLAIN = ("laser", "laser_per_prompt", "random", "round_robin", "score_ensemble", "agreement_ensemble")


def default_methods(rm_names: list[str]) -> list[str]:
    """LASeR (the project's default feedback), the paper's LASeR (``laser:neg_loss``), the per-prompt
    variant, every baseline and the bandit variants."""
    return [PLAIN[0], "laser:neg_loss", *PLAIN[1:], *NEW_METHODS, *[f"single:{n}" for n in rm_names]]


def check_method(method: str, rm_names: list[str]) -> str | None:
    """A problem with a method name, or None when it is valid."""
    from laser.config import FEEDBACKS

    if method in PLAIN or method in ("online_ensemble", "classifier"):
        return None
    if method.startswith("laser@"):
        name = method.split("@", 1)[1]
        return None if name in SELECTORS else f"{method}: unknown selector {name!r} (valid: {', '.join(sorted(SELECTORS))})"
    if method.startswith("laser:"):
        fb = method.split(":", 1)[1]
        return None if fb in FEEDBACKS else f"{method}: unknown feedback {fb!r} (valid: {', '.join(FEEDBACKS)})"
    if method.startswith("single:"):
        rm = method.split(":", 1)[1]
        return None if rm in rm_names else f"{method}: unknown reward model {rm!r} (valid: {', '.join(rm_names)})"
    return (f"unknown method {method!r}; valid: {', '.join(PLAIN)}, online_ensemble, classifier, "
            "laser@<selector>, laser:<feedback>, single:<rm>")


def selects_arms(method: str) -> bool:
    """Whether a method picks one RM per batch/prompt (so it has a selection share to plot)."""
    return method not in ("score_ensemble", "agreement_ensemble", "online_ensemble")


def train(method: str, seed: int, policy_dir: str, train_set, rm_names: list[str], settings, out: Path,
          rms: list, reward_specs: list[dict] | None, classifier=None, eta: float = 0.5):
    """Train ``method`` up to ``settings.iterations`` (resuming from ``out``'s checkpoint).

    Returns:
        (trainer summary, policy, run folder), as :func:`laser.demo.run_method`.
    """
    from laser.demo import run_method

    if method == "online_ensemble":
        from laser.compare.online import run_online_ensemble

        return run_online_ensemble(seed, policy_dir, train_set, rm_names, settings, out, rms=rms,
                                   reward_specs=reward_specs, eta=eta)
    if method == "classifier":
        return run_method("laser", seed, policy_dir, train_set, rm_names, settings, out, rms=rms,
                          selector=classifier, reward_specs=reward_specs)
    if method.startswith("laser@"):
        name = method.split("@", 1)[1]
        conf = {"name": name, **({"kwargs": {"window": SLIDING_WINDOW}} if name == "sliding_linucb" else {})}
        return run_method("laser", seed, policy_dir, train_set, rm_names, settings, out, rms=rms,
                          reward_specs=reward_specs, selector_cfg=conf)
    return run_method(method, seed, policy_dir, train_set, rm_names, settings, out, rms=rms,
                      reward_specs=reward_specs)


def fit_classifier(policy_dir: str, rms: list, settings, n_label_per_domain: int, seed: int):
    """A :class:`ClassifierSelector` fitted on the labelled split (see :mod:`laser.compare.labels`)."""
    from laser.bandits.classifier import ClassifierSelector
    from laser.compare.labels import labelled_split

    split = labelled_split(policy_dir, rms, settings.n_train_per_domain, n_label_per_domain, seed)
    clf = ClassifierSelector(len(rms), split["contexts"].shape[1], seed=seed)
    return clf.fit(split["contexts"], split["labels"]), split["label_share"]


def empty_classifier(policy_dir: str, n_arms: int, seed: int):
    """An unfitted classifier of the right shape (its state comes from the run's checkpoint)."""
    import json

    from laser.bandits.classifier import ClassifierSelector

    dim = json.loads((Path(policy_dir) / "config.json").read_text())["hidden_size"]
    return ClassifierSelector(n_arms, int(dim), seed=seed)
