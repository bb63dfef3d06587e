"""PNG plots of a comparison (matplotlib with the Agg backend, imported on first use).

Needs the ``plot`` extra (``pip install 'laser-rm[plot]'``). Every function writes one PNG and
returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'laser-rm[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def accuracy_curves(curves: dict[str, dict], path: str | Path, title: str = "Test accuracy per iteration") -> Path:
    """One line per method: mean average accuracy per iteration (0 = SFT); band = +-1 std over seeds
    for ``laser``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (m, c) in enumerate(curves.items()):
        x, y, s = np.arange(len(c["mean"])), np.asarray(c["mean"]), np.asarray(c["std"])
        style = "-" if m.startswith("laser") else "--"
        ax.plot(
            x, 100 * y, style, marker="o", ms=3, label=m, color=plt.cm.tab20(i % 20), lw=2.5 if m == "laser" else 1.2
        )
        if m == "laser":  # one band only: 17 overlapping bands are unreadable
            ax.fill_between(x, 100 * (y - s), 100 * (y + s), color=plt.cm.tab20(i % 20), alpha=0.15)
    ax.set(xlabel="iteration (0 = SFT start)", ylabel="average accuracy (%)", title=title)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def selection_over_training(
    shares: list[list[float]],
    rm_names: list[str],
    path: str | Path,
    title: str = "LASeR: share of prompts scored by each RM, per iteration",
) -> Path:
    """Stacked bars: for each iteration, the share of prompts each RM scored."""
    plt = _plt()
    s = np.asarray(shares)
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = np.zeros(len(s))
    for k, name in enumerate(rm_names):
        ax.bar(np.arange(1, len(s) + 1), 100 * s[:, k], bottom=100 * bottom, label=name)
        bottom += s[:, k]
    ax.set(xlabel="iteration", ylabel="share of prompts (%)", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(fig, path)


def selection_by_domain(
    by_domain: dict[str, dict[str, float]],
    rm_names: list[str],
    path: str | Path,
    title: str = "LASeR: share of each domain's prompts per RM (all iterations)",
) -> Path:
    """Grouped bars: for each domain (task), the share of its prompts each RM scored."""
    plt = _plt()
    domains = list(by_domain)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(rm_names), 1)
    for k, name in enumerate(rm_names):
        ax.bar(np.arange(len(domains)) + k * width, [100 * by_domain[d][name] for d in domains], width, label=name)
    ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains)
    ax.set(ylabel="share of prompts (%)", title=title, ylim=(0, 100))
    ax.legend(fontsize=8)
    return _save(fig, path)


def agreement_heatmap(
    matrix: list[list[float]],
    labels: list[str],
    path: str | Path,
    title: str = "Pairwise ordering agreement on sampled response pairs",
) -> Path:
    """Heatmap of the fraction of shared pairs two RMs (or an RM and correctness) order alike."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if np.isfinite(m[i, j]):
                ax.text(
                    j,
                    i,
                    f"{m[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if m[i, j] > 0.6 else "white",
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def training_time(
    times: dict[str, tuple[float, float]],
    path: str | Path,
    title: str = "Training wall time per method (mean +- std over seeds)",
) -> Path:
    """Horizontal bars of training time in seconds."""
    plt = _plt()
    names = list(times)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    ax.barh(range(len(names)), [times[n][0] for n in names], xerr=[times[n][1] for n in names], color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlabel="seconds", title=title)
    return _save(fig, path)


def noise_robustness(
    acc: dict[str, dict[float, float]],
    path: str | Path,
    title: str = "Average accuracy under Gaussian noise on RM scores",
) -> Path:
    """One line per method: accuracy against noise sigma."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, by_sigma in acc.items():
        sig = sorted(by_sigma)
        ax.plot(sig, [100 * by_sigma[s] for s in sig], marker="o", label=m)
    ax.set(xlabel="noise sigma", ylabel="average accuracy (%)", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)
