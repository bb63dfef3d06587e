"""One arm's Bayesian ridge regression, kept exactly without ever inverting a d x d matrix per step.

The arm's model after t observations (x_i, r_i), with prior precision P0 and prior mean m0:

    A = P0 + sum_i x_i x_i^T        b = P0 m0 + sum_i r_i x_i        theta = A^-1 b

Two exact representations of A^-1 (shapes: x (d,), X (t, d), K (t, t)):

* low rank (t <= max_rank, default 0.6 d; P0 = D diagonal), by the Woodbury identity

      A^-1 = D^-1 - D^-1 X^T K X D^-1,        K = (I_t + X D^-1 X^T)^-1

  so x^T A^-1 x and A^-1 x cost O(t d + t^2) and memory is O(t d). Adding a row grows K by the
  block inverse with Schur complement s = 1 + x^T A^-1 x >= 1 (well conditioned):

      K' = [[K + (K m)(K m)^T / s, -K m / s], [-(K m)^T / s, 1 / s]],   m = X D^-1 x

* dense (once t would exceed max_rank, or for a full-matrix prior): A^-1 itself, updated by
  Sherman-Morrison, O(d^2):   A'^-1 = A^-1 - v v^T / (1 + x^T v),   v = A^-1 x.

In both, theta follows the same rank-1 rule, with sign s = +1 to add and -1 to remove a row:

    theta' = theta + s v (r - x^T theta) / (1 + s x^T v)

Removing the oldest row (sliding windows) uses the principal-submatrix inverse
K' = K[1:, 1:] - K[1:, 0] K[0, 1:] / K[0, 0] in the low-rank form and the rank-1 downdate in the
dense form.
"""

from __future__ import annotations

import numpy as np

_MIN_CAPACITY = 8


def _capacity(t: int) -> int:
    """Buffer rows for t observations: a power of two, a pure function of t (exact reloads)."""
    cap = _MIN_CAPACITY
    while cap < t:
        cap *= 2
    return cap


def _rank1_(m: np.ndarray, u: np.ndarray, w: np.ndarray, chunk: int = 512) -> None:
    """In place m += u w^T, in row blocks so no d x d temporary is allocated."""
    for i in range(0, m.shape[0], chunk):
        m[i : i + chunk] += u[i : i + chunk, None] * w[None, :]


class RidgeArm:
    """Exact posterior of one arm's linear model (see the module docstring for the formulas).

    Args:
        dim: context dimension d.
        prior_precision: P0 as a scalar (P0 = p I), a (d,) diagonal or a (d, d) SPD matrix; a
            matrix is inverted once here and the arm starts in dense form.
        prior_mean: m0, (d,) or None for zeros.
        dtype: float64 (default) or float32 for all stored state.
        max_rank: most rows kept in low-rank form; the arm switches to dense A^-1 when t would
            exceed it. None means 0.6 d: there t d + t^2 (the low-rank state and the memory
            a decision or an update reads) reaches d^2, so past it the dense form is cheaper.
        keep_rows: keep every row and reward (needed to remove the oldest one).
    """

    def __init__(
        self,
        dim: int,
        prior_precision: float | np.ndarray = 1.0,
        prior_mean: np.ndarray | None = None,
        dtype: type = np.float64,
        max_rank: int | None = None,
        keep_rows: bool = False,
    ) -> None:
        self.dim, self.dtype, self.keep_rows = int(dim), np.dtype(dtype), bool(keep_rows)
        self.max_rank = (3 * self.dim) // 5 if max_rank is None else int(max_rank)
        p0 = np.asarray(prior_precision, dtype=np.float64)
        m0 = np.zeros(self.dim) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
        if m0.shape != (self.dim,):
            raise ValueError(f"prior_mean must have shape ({self.dim},), got {m0.shape}")
        if p0.ndim == 2:
            if p0.shape != (self.dim, self.dim) or not np.allclose(p0, p0.T):
                raise ValueError(f"prior_precision matrix must be symmetric ({self.dim}, {self.dim}), got {p0.shape}")
        elif p0.ndim > 1 or p0.size not in (1, self.dim) or not np.all(p0 > 0):
            raise ValueError(f"prior_precision must be > 0 and a scalar or ({self.dim},), got shape {p0.shape}")
        self.prior_mean = m0
        self.prior_precision = p0 if p0.ndim == 2 else np.broadcast_to(p0, (self.dim,)).copy()
        self._reset()

    def _reset(self) -> None:
        """Back to the prior: A = P0, b = P0 m0, theta = m0, no rows."""
        p0, m0 = self.prior_precision, self.prior_mean
        if p0.ndim == 2:
            self.mode = "dense"
            self.d0inv = np.zeros(0, dtype=self.dtype)
            self.Ainv = np.linalg.inv(p0).astype(self.dtype)  # the prior only, never per step
            b = p0 @ m0
        else:
            self.mode = "lowrank" if self.max_rank > 0 else "dense"
            self.d0inv = (1.0 / p0).astype(self.dtype)
            self.Ainv = np.diag(self.d0inv) if self.mode == "dense" else None
            b = p0 * m0
        self.theta = m0.astype(self.dtype)
        self.b = b.astype(self.dtype)
        self.t = 0
        self.removed_since_refresh = 0
        self._alloc(0)

    def refresh(self) -> None:
        """Rebuild A^-1 and theta from the prior and the kept rows (keep_rows only).

        Called after every t removals (amortised O(t d + t^2) per removal in low-rank form,
        O(d^2) in dense form; never a d x d inversion for a diagonal prior), so round-off from
        downdates cannot accumulate; an arm whose rows are all removed is exactly the prior.
        """
        X, R = self.X.copy(), self._R[: self.t].copy()
        self._reset()
        self.add_rows(X, R)

    # ----------------------------------------------------------------- buffers
    def _alloc(self, t: int) -> None:
        cap = _capacity(t)
        rows = self.mode == "lowrank" or self.keep_rows
        self._X = np.zeros((cap, self.dim), self.dtype) if rows else None
        self._K = np.zeros((cap, cap), self.dtype) if self.mode == "lowrank" else None
        self._R = np.zeros(cap, self.dtype) if self.keep_rows else None

    def _fit_capacity(self, n: int) -> None:
        """Make the buffers hold _capacity(n) rows, keeping the first t (a copy only on change)."""
        buf = self._X if self._X is not None else self._R
        if buf is None or buf.shape[0] == _capacity(n):
            return
        X, K, R, t = self._X, self._K, self._R, self.t
        self._alloc(n)
        if X is not None:
            self._X[:t] = X[:t]
        if K is not None:
            self._K[:t, :t] = K[:t, :t]
        if R is not None:
            self._R[:t] = R[:t]

    @property
    def X(self) -> np.ndarray:
        """The rows in the model, (t, d) (low-rank form or keep_rows only)."""
        return self._X[: self.t]

    # ----------------------------------------------------------------- queries
    def mean(self, C: np.ndarray) -> np.ndarray:
        """C theta for contexts C (B, d) -> (B,)."""
        return C @ self.theta

    def quad(self, C: np.ndarray) -> np.ndarray:
        """diag(C A^-1 C^T) for contexts C (B, d) -> (B,), O(B (t d + t^2)) in low-rank form."""
        if self.mode == "dense":
            return np.einsum("bi,bi->b", C @ self.Ainv, C)
        Cd = C * self.d0inv
        out = np.einsum("bi,bi->b", C, Cd)
        if self.t:
            U = Cd @ self.X.T
            out -= np.einsum("bi,bi->b", U @ self._K[: self.t, : self.t], U)
        return np.maximum(out, 0.0)  # round-off can push a tiny variance below 0

    def solve(self, x: np.ndarray) -> np.ndarray:
        """A^-1 x, (d,)."""
        if self.mode == "dense":
            return self.Ainv @ x
        xd = x * self.d0inv
        if self.t == 0:
            return xd
        return xd - self.d0inv * (self.X.T @ (self._K[: self.t, : self.t] @ (self.X @ xd)))

    def inverse(self) -> np.ndarray:
        """A^-1 materialised as (d, d) (for tests and inspection; O(d^2 t) in low-rank form)."""
        if self.mode == "dense":
            return self.Ainv.copy()
        Z = self.X * self.d0inv
        return np.diag(self.d0inv) - Z.T @ self._K[: self.t, : self.t] @ Z

    # ----------------------------------------------------------------- updates
    def add(self, x: np.ndarray, r: float) -> None:
        """Add one observation (x (d,), r): A += x x^T, b += r x, theta and A^-1 exact."""
        x = np.asarray(x, dtype=self.dtype)
        if self.mode == "lowrank" and self.t >= self.max_rank:
            self._densify()
        t = self.t
        self._fit_capacity(t + 1)
        if self.mode == "lowrank":
            xd = x * self.d0inv
            m = self.X @ xd
            Km = self._K[:t, :t] @ m
            v = xd - self.d0inv * (self.X.T @ Km)
            s = 1.0 + x @ v
            K = self._K
            _rank1_(K[:t, :t], Km, Km / s)
            K[:t, t] = -Km / s
            K[t, :t] = -Km / s
            K[t, t] = 1.0 / s
        else:
            v = self.Ainv @ x
            s = 1.0 + x @ v
            _rank1_(self.Ainv, v, -v / s)
        self.theta += v * ((r - x @ self.theta) / s)
        self.b += r * x
        if self._X is not None:
            self._X[t] = x
        if self._R is not None:
            self._R[t] = r
        self.t = t + 1

    def add_rows(self, Xn: np.ndarray, y: np.ndarray) -> None:
        """Add m observations at once (block Woodbury), same model as m calls to :meth:`add`.

        With V = A^-1 Xn^T (d, m) and S = I_m + Xn V (m, m, the block Schur complement):

            A'^-1 = A^-1 - V S^-1 V^T,        theta' = theta + V S^-1 (y - Xn theta)

        and in low-rank form K grows by the block inverse [[K + G S^-1 G^T, -G S^-1],
        [-S^-1 G^T, S^-1]], G = K X D^-1 Xn^T. Only an m x m system is solved, never d x d.
        Used to warm-start an arm from logged data; rows beyond max_rank go through :meth:`add`.
        """
        Xn = np.asarray(Xn, dtype=self.dtype).reshape(-1, self.dim)
        y = np.asarray(y, dtype=self.dtype).reshape(-1)
        if self.mode == "lowrank" and self.t + len(Xn) > self.max_rank:
            room = max(self.max_rank - self.t, 0)
            if room:
                self.add_rows(Xn[:room], y[:room])
            for x, r in zip(Xn[room:], y[room:], strict=True):
                self.add(x, float(r))
            return
        t, m = self.t, len(Xn)
        if m == 0:
            return
        if self.mode == "lowrank":
            Zn = Xn * self.d0inv  # (m, d) rows of Xn D^-1
            G = self._K[:t, :t] @ (self.X @ Zn.T)  # (t, m)
            V = Zn.T - self.d0inv[:, None] * (self.X.T @ G)  # (d, m) = A^-1 Xn^T
        else:
            V = self.Ainv @ Xn.T
        S = np.eye(m, dtype=self.dtype) + Xn @ V
        Sinv = np.linalg.inv(S)  # m x m
        self.theta += V @ (Sinv @ (y - Xn @ self.theta))
        self.b += Xn.T @ y
        self._fit_capacity(t + m)
        if self.mode == "dense":
            self.Ainv -= V @ (Sinv @ V.T)
        else:
            K = self._K
            GS = G @ Sinv
            K[:t, :t] += GS @ G.T
            K[:t, t : t + m] = -GS
            K[t : t + m, :t] = -GS.T
            K[t : t + m, t : t + m] = Sinv
        if self._X is not None:
            self._X[t : t + m] = Xn
        if self._R is not None:
            self._R[t : t + m] = y
        self.t = t + m

    def remove_oldest(self) -> None:
        """Remove the oldest observation exactly (keep_rows only): A -= x x^T, b -= r x."""
        if not self.keep_rows or self.t == 0:
            raise RuntimeError("remove_oldest needs keep_rows=True and at least one row")
        t, x, r = self.t, self._X[0].copy(), float(self._R[0])
        v = self.solve(x)
        s = 1.0 - x @ v  # = 1 / (1 + x^T A_without^-1 x) > 0
        self.theta -= v * ((r - x @ self.theta) / s)
        self.b -= r * x
        if self.mode == "lowrank":
            K = self._K
            new = K[1:t, 1:t] - np.outer(K[1:t, 0], K[0, 1:t] / K[0, 0])
            K[: t - 1, : t - 1] = new
            K[t - 1, :t] = 0.0
            K[:t, t - 1] = 0.0
        else:
            _rank1_(self.Ainv, v, v / s)
        self._X[: t - 1] = self._X[1:t].copy()
        self._R[: t - 1] = self._R[1:t].copy()
        self._X[t - 1], self._R[t - 1] = 0.0, 0.0
        self.t = t - 1
        self._fit_capacity(self.t)
        self.removed_since_refresh += 1
        if self.removed_since_refresh >= max(self.t, 1):
            self.refresh()

    def _densify(self) -> None:
        """Switch to the dense inverse (once, O(d^2 t)); rows are dropped unless keep_rows."""
        self.Ainv = self.inverse()
        X, R, t = self._X, self._R, self.t
        self.mode = "dense"
        self._alloc(t)
        if self.keep_rows:
            self._X[:t], self._R[:t] = X[:t], R[:t]

    # ----------------------------------------------------------------- state
    def state(self) -> dict[str, np.ndarray]:
        """Flat arrays that :meth:`load` restores exactly."""
        sd = {
            "mode": np.array(self.mode),
            "t": np.array(self.t, dtype=np.int64),
            "removed_since_refresh": np.array(self.removed_since_refresh, dtype=np.int64),
            "prior_mean": self.prior_mean.copy(),
            "prior_precision": self.prior_precision.copy(),
            "theta": self.theta.copy(),
            "b": self.b.copy(),
            "d0inv": self.d0inv.copy(),
        }
        if self._X is not None:
            sd["X"] = self.X.copy()
        if self._K is not None:
            sd["K"] = self._K[: self.t, : self.t].copy()
        if self._R is not None:
            sd["R"] = self._R[: self.t].copy()
        if self.mode == "dense":
            sd["Ainv"] = self.Ainv.copy()
        return sd

    def load(self, sd: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state`'s output (buffers get the capacity they had)."""
        self.mode, self.t = str(sd["mode"][()]), int(sd["t"])
        self.removed_since_refresh = int(sd["removed_since_refresh"])
        self.prior_mean = np.array(sd["prior_mean"], dtype=np.float64)
        self.prior_precision = np.array(sd["prior_precision"], dtype=np.float64)
        self.theta = np.array(sd["theta"], dtype=self.dtype)
        self.b = np.array(sd["b"], dtype=self.dtype)
        self.d0inv = np.array(sd["d0inv"], dtype=self.dtype)
        self.Ainv = np.array(sd["Ainv"], dtype=self.dtype) if self.mode == "dense" else None
        self._alloc(self.t)
        t = self.t
        if self._X is not None:
            self._X[:t] = sd["X"]
        if self._K is not None:
            self._K[:t, :t] = sd["K"]
        if self._R is not None:
            self._R[:t] = sd["R"]
