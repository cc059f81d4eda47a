r"""Neural decomposition of a lifted SDP matrix into a two-layer polynomial-activation network
(MATH.md §3, recovering the network).

Reference: B. Bartan and M. Pilanci, "Neural Spectrahedra and Semidefinite Lifts: Global
Convex Optimization of Polynomial Activation Neural Networks in Fully Polynomial-Time",
arXiv:2101.02429 (the "neural decomposition", Section on recovering the network weights).

Setting
-------
The convex program for a two-layer network with quadratic activation
:math:`\sigma(t) = a t^2 + b t + c` optimises over a symmetric positive semidefinite matrix

.. math::

    Z = \begin{bmatrix} Z_1 & z_2 \\ z_2^\top & z_4 \end{bmatrix} \in \mathbb{S}_+^{d+1},
    \qquad \operatorname{tr}(Z_1) = z_4,

whose prediction on an input :math:`x` is :math:`a\,x^\top Z_1 x + b\,x^\top z_2 + c\,z_4`.
With :math:`G = \operatorname{diag}(I_d, -1)` the trace constraint reads
:math:`\langle G, Z\rangle = 0`.  The neural decomposition writes

.. math::

    Z = \sum_{j=1}^m y_j y_j^\top, \qquad y_j^\top G\, y_j = 0,

so that every :math:`y_j = [p_j; q_j]` satisfies :math:`\|p_j\| = |q_j|`.  Setting
:math:`u_j = \operatorname{sign}(q_j)\, p_j / \|p_j\|` (unit norm) and :math:`\alpha_j = q_j^2`
gives :math:`y_j y_j^\top = \alpha_j [u_j; 1][u_j; 1]^\top`, hence

.. math::

    a\,x^\top Z_1 x + b\,x^\top z_2 + c\,z_4
    = \sum_{j=1}^m \alpha_j \bigl(a (u_j^\top x)^2 + b\, u_j^\top x + c\bigr),

i.e. a two-layer network with unit-norm first-layer neurons :math:`u_j` and non-negative
second-layer weights :math:`\alpha_j`.

Algorithm
---------
Start from the eigendecomposition :math:`Z = \sum_i \lambda_i e_i e_i^\top` and the pool of
vectors :math:`p_i = \sqrt{\lambda_i}\, e_i`.  While possible, emit a pooled vector that is
already :math:`G`-null; otherwise take :math:`p_i` with :math:`p_i^\top G p_i > 0` and
:math:`p_j` with :math:`p_j^\top G p_j < 0`, solve the scalar quadratic
:math:`(p_i + t p_j)^\top G (p_i + t p_j) = 0` (its discriminant
:math:`(p_i^\top G p_j)^2 - (p_i^\top G p_i)(p_j^\top G p_j)` is positive because the two
:math:`G`-values have opposite signs), emit :math:`y = (p_i + t p_j)/\sqrt{1+t^2}` and return
:math:`z = (p_j - t p_i)/\sqrt{1+t^2}` to the pool; :math:`y y^\top + z z^\top = p_i p_i^\top +
p_j p_j^\top` because :math:`(y, z)` is a rotation of :math:`(p_i, p_j)`.  Each step removes
one vector from the pool, so the width satisfies :math:`m \le \operatorname{rank}(Z)`.  The
sum of the pooled :math:`G`-values is invariant and equals :math:`\operatorname{tr}(Z_1) - z_4`;
when it is non-zero the process ends with vectors of one :math:`G`-sign that cannot be paired.
They are not emitted; their size shows up in :attr:`Decomposition.residual`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["Decomposition", "neural_decomposition"]

logger = logging.getLogger(__name__)

_TINY = float(np.finfo(np.float64).tiny)
_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Decomposition:
    r"""Two-layer network recovered from a lifted matrix :math:`Z`.

    Attributes:
        weights: ``(m, d)`` array whose rows are the unit-norm neurons :math:`u_j`.
        scales: ``(m,)`` array of non-negative second-layer weights :math:`\alpha_j`, with
            :math:`\sum_j \alpha_j [u_j; 1][u_j; 1]^\top \approx Z`.
        residual: relative reconstruction error
            :math:`\|Z_+ - \sum_j \alpha_j [u_j;1][u_j;1]^\top\|_F / \|Z\|_F`, where
            :math:`Z_+` is the positive semidefinite part of the symmetrised input.  It is at
            round-off level when :math:`Z \succeq 0` and :math:`\operatorname{tr}(Z_1) = z_4`
            hold, and reports the violation otherwise.
    """

    weights: np.ndarray
    scales: np.ndarray
    residual: float

    @property
    def width(self) -> int:
        """Number of neurons :math:`m`."""
        return int(self.scales.shape[0])

    def reconstruct(self) -> np.ndarray:
        r"""Return :math:`\sum_j \alpha_j [u_j; 1][u_j; 1]^\top` as a ``(d+1, d+1)`` array."""
        return _reconstruct(self.weights, self.scales)


def _reconstruct(weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    lifted = np.hstack([weights, np.ones((weights.shape[0], 1))])  # rows [u_j; 1]
    return (lifted * scales[:, None]).T @ lifted


def _g_form(v: np.ndarray, w: np.ndarray) -> float:
    r""":math:`v^\top G w` with :math:`G = \operatorname{diag}(I_d, -1)`."""
    return float(v[:-1] @ w[:-1] - v[-1] * w[-1])


def _null_combination(p_i: np.ndarray, p_j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Rotate :math:`(p_i, p_j)` into a :math:`G`-null vector :math:`y` and a remainder :math:`z`.

    Requires :math:`p_i^\top G p_i > 0 > p_j^\top G p_j`.  With :math:`A = p_i^\top G p_i`,
    :math:`B = p_i^\top G p_j`, :math:`C = p_j^\top G p_j` the root of :math:`A + 2Bt + Ct^2 = 0`
    is :math:`t = A / s` with :math:`s = -(B + \operatorname{sign}(B)\sqrt{B^2 - AC})`
    (the cancellation-free form of the quadratic formula; :math:`|s| \ge \sqrt{-AC} > 0`).
    """
    a = _g_form(p_i, p_i)
    b = _g_form(p_i, p_j)
    c = _g_form(p_j, p_j)
    # B^2 - AC > 0 in exact arithmetic since AC < 0; clamp guards against round-off NaNs.
    disc = max(b * b - a * c, 0.0)
    s = -(b + np.copysign(np.sqrt(disc), b))
    t = a / s
    norm = np.sqrt(1.0 + t * t)
    y = (p_i + t * p_j) / norm
    z = (p_j - t * p_i) / norm
    return y, z


def neural_decomposition(Z: np.ndarray, *, tol: float = 1e-9) -> Decomposition:
    r"""Decompose a lifted matrix into unit-norm neurons and non-negative scales.

    Finds :math:`u_j` with :math:`\|u_j\| = 1` and :math:`\alpha_j \ge 0` such that
    :math:`Z \approx \sum_{j=1}^m \alpha_j [u_j; 1][u_j; 1]^\top` (Bartan & Pilanci,
    arXiv:2101.02429), see the module docstring for the algorithm.

    Args:
        Z: ``(d+1, d+1)`` (approximately) symmetric positive semidefinite matrix with
            (approximately) :math:`\operatorname{tr}(Z_1) = z_4`.  It is symmetrised first.
        tol: relative tolerance.  Eigenvalues below ``tol * lambda_max`` are dropped (negative
            ones are clipped to zero), and a pooled vector :math:`p` counts as :math:`G`-null
            when :math:`|p^\top G p| \le \mathrm{tol} \cdot \max(\|p\|^2, \lambda_{\max})`;
            the absolute part keeps round-off in tiny vectors from blocking their emission.

    Returns:
        A :class:`Decomposition` of width :math:`m \le \operatorname{rank}(Z)`
        (``weights`` of shape ``(m, d)``, ``scales`` of shape ``(m,)``, float64).  For
        :math:`Z = 0` the width is zero.

    Raises:
        ValueError: if ``Z`` is not a square matrix with finite entries or ``tol < 0``.
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[0] != Z.shape[1] or Z.shape[0] < 1:
        raise ValueError(f"Z must be a square (d+1, d+1) matrix, got shape {Z.shape}")
    if not np.all(np.isfinite(Z)):
        raise ValueError("Z has non-finite entries")
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol}")
    d = Z.shape[0] - 1
    Z = 0.5 * (Z + Z.T)
    z_norm = float(np.linalg.norm(Z))
    if z_norm == 0.0:
        return Decomposition(weights=np.zeros((0, d)), scales=np.zeros(0), residual=0.0)
    # Work with Z / ||Z||_F (eigenvalues in [-1, 1]) so that no product under- or overflows.
    Z = Z / z_norm

    eigvals, eigvecs = np.linalg.eigh(Z)
    lam_max = max(float(eigvals[-1]), _TINY)
    eig_pos = np.clip(eigvals, 0.0, None)
    z_psd = (eigvecs * eig_pos) @ eigvecs.T
    keep = eigvals > tol * lam_max
    pool: list[np.ndarray] = list((eigvecs[:, keep] * np.sqrt(eigvals[keep])).T)

    emitted: list[np.ndarray] = []
    null_abs = tol * lam_max
    while pool:
        g_vals = np.array([_g_form(p, p) for p in pool])
        sq_norms = np.array([float(p @ p) for p in pool])
        is_null = np.abs(g_vals) <= tol * np.maximum(sq_norms, 0.0) + null_abs
        if np.any(is_null):
            emitted.append(pool.pop(int(np.flatnonzero(is_null)[0])))
            continue
        if not (np.any(g_vals > 0) and np.any(g_vals < 0)):
            break  # remaining vectors share a G-sign: trace equality violated
        i = int(np.argmax(g_vals))
        j = int(np.argmin(g_vals))
        y, z = _null_combination(pool[i], pool[j])
        pool = [p for k, p in enumerate(pool) if k not in (i, j)]
        emitted.append(y)
        pool.append(z)
    # Vectors left with one G-sign are null up to round-off when the trace equality holds (a
    # solver's Z meets it to ~1e-9): emit those whose G-value is tiny relative to their norm,
    # so no rank is lost; the rest reflect a real violation and go to the residual.
    near_null = [abs(_g_form(p, p)) <= np.sqrt(tol) * float(p @ p) for p in pool]
    emitted.extend(p for p, ok in zip(pool, near_null, strict=True) if ok)
    pool = [p for p, ok in zip(pool, near_null, strict=True) if not ok]
    if pool:
        leftover = sum(_g_form(p, p) for p in pool)
        logger.debug(
            "neural_decomposition: %d unpaired vector(s) with total G-value %.3e left over",
            len(pool),
            leftover,
        )

    weights_list: list[np.ndarray] = []
    scales_list: list[float] = []
    skip_level = _EPS * lam_max
    for y in emitted:
        p, q = y[:-1], float(y[-1])
        p_norm = float(np.linalg.norm(p))
        if q * q <= skip_level or p_norm <= np.sqrt(_TINY):
            continue  # (near-)zero vector: nothing to emit, error goes to the residual
        weights_list.append(np.copysign(1.0, q) * p / p_norm)
        scales_list.append(q * q)

    weights = np.array(weights_list, dtype=np.float64).reshape(len(weights_list), d)
    scales = np.array(scales_list, dtype=np.float64)
    residual = float(np.linalg.norm(z_psd - _reconstruct(weights, scales)))  # ||Z_scaled|| = 1
    return Decomposition(weights=weights, scales=scales * z_norm, residual=residual)
