"""Method names of `laser compare` and how each one is trained (one iteration range at a time).

Names: every `laser demo` method (``laser``: the label-free reliability router on the embedded
benchmark, ``laser_per_prompt``, ``laser:<feedback>``,
``random``, ``round_robin``, ``score_ensemble``, ``agreement_ensemble``, ``single:<rm>``), plus
``online_ensemble`` (multiplicative-weights RM ensemble), ``classifier`` (offline classifier
selection) and ``laser@<selector>`` (LASeR with another bandit, e.g. ``laser@exp3``,
``laser@lints``, ``laser@sliding_linucb``).
"""

from __future__ import annotations

from pathlib import Path

from laser.build import PLAIN
from laser.build import check_method as _check

#: routing methods beyond the paper's: an online RM ensemble, routers trained offline on labels, other bandits
OTHER_ROUTERS = ("online_ensemble", "classifier", "bayes_router", "laser@exp3", "laser@lints", "laser@sliding_linucb")
#: the bounds every report places the methods between: random and oracle selection, and the gold-answer RM
BOUNDS = ("oracle", "verifier")


def default_methods(rm_names: list[str]) -> list[str]:
    """LASeR (the label-free reliability router), the paper's LASeR (``laser:neg_loss``), LinUCB on
    label-free feedback (``laser:auto_label_free``), the label-based ``laser:pair_accuracy``, the
    per-prompt variant, every baseline, the bounds and the other routers."""
    return [
        PLAIN[0],
        "laser:neg_loss",
        "laser:auto_label_free",
        "laser:pair_accuracy",
        *PLAIN[1:],
        *BOUNDS,
        *OTHER_ROUTERS,
        *[f"single:{n}" for n in rm_names],
    ]


def check_method(method: str, rm_names: list[str]) -> str | None:
    """A problem with a method name, or None when it is valid (:func:`laser.build.check_method`)."""
    return _check(method, rm_names, extra=("classifier", "verifier", "bayes_router"))


def selects_arms(method: str) -> bool:
    """Whether a method picks one RM per batch/prompt (so it has a selection share to plot)."""
    return method not in ("score_ensemble", "agreement_ensemble", "online_ensemble", "verifier")


def train(
    method: str,
    seed: int,
    policy_dir: str,
    train_set,
    rm_names: list[str],
    settings,
    out: Path,
    rms: list,
    reward_specs: list[dict] | None,
    classifier=None,
    eta: float = 0.5,
):
    """Train ``method`` up to ``settings.iterations`` (resuming from ``out``'s checkpoint).

    Returns:
        (trainer summary, policy, run folder), as :func:`laser.bench.runs.run_method`.
    """
    from laser.bench.runs import run_method

    if method in ("classifier", "bayes_router"):
        # classifier: LinUCB's strategy with the fitted classifier as its selector;
        # bayes_router: per-prompt LinTS with priors fitted on the labelled split
        name = "laser:auto_label_free" if method == "classifier" else method
        return run_method(
            name,
            seed,
            policy_dir,
            train_set,
            rm_names,
            settings,
            out,
            rms=rms,
            selector=classifier,
            reward_specs=reward_specs,
        )
    return run_method(
        method, seed, policy_dir, train_set, rm_names, settings, out, rms=rms, reward_specs=reward_specs, eta=eta
    )


def fit_classifier(policy_dir: str, rms: list, settings, n_label_per_domain: int, seed: int):
    """A :class:`ClassifierSelector` fitted on the labelled split (see :mod:`laser.bench.compare.labels`)."""
    from laser.bandits.classifier import ClassifierSelector
    from laser.bench.compare.labels import labelled_split

    split = labelled_split(policy_dir, rms, settings.n_train_per_domain, n_label_per_domain, seed, settings.benchmark)
    clf = ClassifierSelector(len(rms), split["contexts"].shape[1], seed=seed)
    return clf.fit(split["contexts"], split["labels"]), split["label_share"]


def fit_labelled_selector(method: str, policy_dir: str, rms: list, settings, n_label_per_domain: int, seed: int):
    """``classifier`` or ``bayes_router`` fitted on the same labelled split (the same label budget);
    returns (selector, label share per RM)."""
    if method == "classifier":
        return fit_classifier(policy_dir, rms, settings, n_label_per_domain, seed)
    from laser.bandits.bayes_router import BayesRouterSelector
    from laser.bench.compare.labels import labelled_split

    split = labelled_split(policy_dir, rms, settings.n_train_per_domain, n_label_per_domain, seed, settings.benchmark)
    return BayesRouterSelector.from_labelled(split["contexts"], split["labels"], len(rms), seed=seed), split[
        "label_share"
    ]


def empty_labelled_selector(method: str, policy_dir: str, n_arms: int, seed: int):
    """An unfitted ``classifier`` / ``bayes_router`` of the right shape (its state comes from the checkpoint)."""
    if method == "classifier":
        return empty_classifier(policy_dir, n_arms, seed)
    import json

    from laser.bandits.bayes_router import BayesRouterSelector

    dim = json.loads((Path(policy_dir) / "config.json").read_text())["hidden_size"]
    return BayesRouterSelector(n_arms, int(dim), seed=seed)


def empty_classifier(policy_dir: str, n_arms: int, seed: int):
    """An unfitted classifier of the right shape (its state comes from the run's checkpoint)."""
    import json

    from laser.bandits.classifier import ClassifierSelector

    dim = json.loads((Path(policy_dir) / "config.json").read_text())["hidden_size"]
    return ClassifierSelector(n_arms, int(dim), seed=seed)
