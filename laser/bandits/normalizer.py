"""The paper's quantile reward normaliser."""

from __future__ import annotations

import numpy as np


class QuantileNormalizer:
    """Map a raw feedback value to [0, 1] by the quantiles of every raw value seen so far.

    Rule (LASeR): append ``raw`` to the history H, then

        q_lo = quantile(H, low),  q_hi = quantile(H, high)        (numpy "linear" quantiles)
        reward = clip((raw - q_lo) / (q_hi - q_lo), 0, 1)

    so values below the 20th percentile give 0 and values above the 80th give 1.

    First rewards: with one value, or whenever q_hi - q_lo <= 1e-12 * max(1, |q_lo|, |q_hi|)
    (all values (nearly) equal), the reward is 0.5: nothing says this step was better or worse.
    With two distinct values a < b the quantiles lie strictly between them, so the larger one
    gives 1 and the smaller 0 (e.g. history [1, 3]: q_lo = 1.4, q_hi = 2.6, raw 3 -> 1).

    Args:
        low: lower quantile in [0, 1).
        high: upper quantile in (low, 1].

    Attributes:
        history_: list of the raw values seen, in order.
    """

    def __init__(self, low: float = 0.2, high: float = 0.8) -> None:
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"QuantileNormalizer: need 0 <= low < high <= 1, got low={low!r}, high={high!r}")
        self.low, self.high = float(low), float(high)
        self.history_: list[float] = []

    def normalize(self, raw: float) -> float:
        """Record ``raw`` and return its reward in [0, 1] (see the class docstring).

        Raises:
            ValueError: ``raw`` is NaN or infinite (the caller names the iteration, step and arm).
        """
        raw = float(raw)
        if not np.isfinite(raw):
            raise ValueError(f"QuantileNormalizer: raw feedback is not finite ({raw!r})")
        self.history_.append(raw)
        q_lo, q_hi = np.quantile(np.asarray(self.history_), [self.low, self.high])
        spread = q_hi - q_lo
        if spread <= 1e-12 * max(1.0, abs(q_lo), abs(q_hi)):
            return 0.5
        return float(np.clip((raw - q_lo) / spread, 0.0, 1.0))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays: ``normalizer`` name, ``hp.low``, ``hp.high``, ``history`` (float64)."""
        return {
            "normalizer": np.array("quantile"),
            "hp.low": np.array(self.low),
            "hp.high": np.array(self.high),
            "history": np.asarray(self.history_, dtype=np.float64),
        }

    def load_state_dict(self, sd: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s output.

        Raises:
            ValueError: the saved quantiles differ from this object's, or keys are missing.
        """
        for key in ("normalizer", "hp.low", "hp.high", "history"):
            if key not in sd:
                raise ValueError(f"QuantileNormalizer.load_state_dict: missing key {key!r}")
        saved = (float(sd["hp.low"]), float(sd["hp.high"]))
        if saved != (self.low, self.high):
            raise ValueError(
                f"QuantileNormalizer.load_state_dict: saved (low, high) = {saved}, "
                f"this object ({self.low}, {self.high})"
            )
        self.history_ = [float(v) for v in sd["history"]]

    def __repr__(self) -> str:
        return f"QuantileNormalizer(low={self.low}, high={self.high}, n={len(self.history_)})"
