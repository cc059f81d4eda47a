"""ADMM with a cached factorisation for the convex ReLU programs (a) and, with the hinge loss
and an ℓ2 threat, (b); CPU or GPU.

The program (MATH.md §1, :class:`~convexrobust.problems.relu.ConvexReLU` without a threat), per
output ``c``, over the groups ``u`` (every ``v_i`` and ``w_i``; ``U`` of shape (C, 2P, d̃))::

    minimise   L(F u) + β Σ_g ‖u_g‖₂        subject to  A_g u_g = E_i X̃ u_g ≥ 0

with ``F = [D_1X̃ … D_PX̃, −D_1X̃ … −D_PX̃]`` (``F u = Σ_i D_i X̃ (v_i − w_i)``, the predictions)
and ``L`` the mean loss of :meth:`ConvexReLU.data_term_torch`: ``(1/2n) Σ_c ‖t_c − F u_c‖²``
(squared loss: binary ±1 targets, regression, one-vs-all multi-class) or
``(1/n) Σ_k (1 − t_k (F u)_k)_+`` (binary hinge) or ``(1/n) Σ_k Σ_{c≠y_k} (1 − (F u)_{k,y_k} +
(F u)_{k,c})_+`` (the pairwise multi-class hinge, MATH.md §2 at ε = 0); the robust hinge
programs are in "Robust programs" below. Other robust programs (squared or logistic loss, ℓ∞
or ℓ1 threats) and the logistic loss stay on the augmented Lagrangian solver
(:mod:`convexrobust.solvers.relu_first_order`).

Splitting
---------
The splitting of Bai, Gautam & Sojoudi (SIMODS 2022, arXiv 2201.01965: ADMM for the convex ReLU
program, one linear system for all iterations) in the form of OSQP (Stellato et al., Math.
Program. Comput. 2020): ``min f(u) + g(w)`` subject to ``C u = w`` with the blocks

* ``z = u``, ``g ∋ β Σ_g ‖z_g‖`` (the group lasso);
* ``s = Â u``, ``g ∋ I(s ≥ 0)`` (the cone; ``Â_g = E_i X̂`` with the rows of ``X̃`` scaled to
  unit norm, which leaves the cone unchanged and puts ``s`` in the units of ``u``);
* squared loss: ``f(u) = (1/2n)‖t − F u‖²`` stays in the u-update; hinge: ``f = 0`` and
  ``r = F u`` (n × C), ``g ∋ (1/n) Σ_k ℓ_k(r_k)`` with ``ℓ_k`` the binary or pairwise hinge.

Penalties ``ρ_z``, ``ρ_s Ω_{g,k}`` (one per cone row, ``Ω`` below), ``ρ_r``; unscaled duals ``y``;
over-relaxation ``α`` (:data:`ALPHA`). One iteration::

    u⁺ = M⁻¹ [ −q + ρ_z z − y_z + Âᵀ(ρ_sΩ∘s − y_s) (+ Fᵀ(ρ_r r − y_r)) ]
    ŵ  = α C u⁺ + (1 − α) w
    z⁺ = ŵ_z + y_z/ρ_z block soft-thresholded by β/ρ_z;   s⁺ = (ŵ_s + y_s/(ρ_sΩ))_+
    r⁺ = prox of the hinge at ŵ_r + y_r/ρ_r, step 1/(nρ_r): binary, on m = t∘r, m + 1/(nρ_r)
         below 1 − 1/(nρ_r), 1 in between, m above 1; pairwise, row by row, the exact
         piecewise-linear root of problems/losses.py (``Loss.pairwise_prox``)
    y⁺ = y + ρ∘(ŵ − w⁺)

The cone block is stored as one array ``v = s + y_s/(ρ_sΩ)``: then ``s = v₊``, ``y_s = ρ_sΩ∘v₋``,
``ρ_sΩ∘s − y_s = ρ_sΩ∘|v|`` and the update is ``v ← v + α(Âu⁺ − v₊)``.

The linear system
-----------------
``M = κ FᵀF + blockdiag(B_g)``, ``B_g = ρ_z I + ρ_s X̂ᵀ diag(Ω_g) X̂`` (d̃ × d̃: ``E_g² = I``),
``κ = 1/n`` (squared: the data term folds into the system) or ``ρ_r`` (hinge). ``F`` sees only
``a = v − w`` (``F u = F₀ a``, ``F₀ = [D_1X̃ … D_PX̃]``), so eliminating ``v`` and ``w`` pattern by
pattern leaves one Pd̃ × Pd̃ system::

    (H + κF₀ᵀF₀) a = H p,     H_i = (B_{v,i}⁻¹ + B_{w,i}⁻¹)⁻¹,
    p_i = B_{v,i}⁻¹r_{v,i} − B_{w,i}⁻¹r_{w,i},     c = κF₀ᵀF₀ a = H(p − a),
    v_i = B_{v,i}⁻¹(r_{v,i} − c_i),     w_i = B_{w,i}⁻¹(r_{w,i} + c_i)

factored once per (ρ, Ω), directly (``F₀ᵀF₀`` is formed once) or, when n is the smaller side,
through Woodbury on an n × n matrix, ``S = H⁻¹``::

    c = F₀ᵀ (κ⁻¹ I + Σ_i D_i X̃ S_i X̃ᵀ D_i)⁻¹ F₀ p

(:func:`_choose_factorisation`). With ``Ω ≡ 1``, ``H = B/2`` and this is
``(2κF₀ᵀF₀ + B) a = r_v − r_w``. ``F`` acts on each output alone, so ``M`` is block diagonal
over the outputs, and every output keeps its own ρ and Ω, hence its own factorisations, on the
shared ``F₀ᵀF₀``. One matrix for all outputs would need one Ω for all: the union of their
near-active rows drowns each output's active rows again, and the joint ADMM stalls where each
output alone converges. The outputs of a multi-output squared loss are independent programs
(the loss, the group lasso and the cones all separate over them) and run one after the other
on the shared budget; the pairwise hinge couples them only through the loss block, so they
iterate together (one joint r-update, one ρ_r).

Row weights and penalties
-------------------------
At the optimum most groups sit on a low-dimensional face of their cone (often a ray: d̃ − 1 of the
n rows active), and with one ρ for all rows the few active rows are drowned by the n inactive
ones: ADMM then needs thousands of iterations. So the rows are reweighted, as OSQP weights
equality rows above inequality rows: after :data:`WEIGHT_START` iterations, and then at
geometrically spaced iterations (or earlier when the worst cone residual sits on a down-weighted
row), ``Ω_{g,k} = 1`` on the rows that are near-active (relative slack below
:data:`WEIGHT_THRESHOLD`, violated, or carrying a multiplier) and :data:`WEIGHT_FLOOR`
elsewhere; every change is a refactorisation. This cuts the iterations by an order of
magnitude against one tuned ρ for all rows. On the coupled pairwise block a reweight after an
output's first is skipped when it would move fewer than :data:`WEIGHT_MIN_CHANGE` of its rows
(there the factorisations dominate the time; on binary programs the small moves pay off).
``ρ_s`` is set so that
``ρ_s·tr(X̂ᵀΩ_gX̂)/d̃`` is :data:`RHO_CONE` times the data term's curvature (the mean diagonal of
``FᵀF/n``) for the median group; ``ρ_z`` starts at :data:`RHO_GROUP` times the curvature and
follows OSQP's rule ``ρ_z ← ρ_z √(prim_z / dual)`` when that moves it by more than
:data:`RHO_ADAPT_FACTOR` (at most once per :data:`WEIGHT_EVERY` iterations, and only while both
residuals are above :data:`RHO_ADAPT_FLOOR` times the tolerance). ``ρ_r`` is
:data:`RHO_LOSS` ``/n`` for the binary hinge (then ``ρ_r FᵀF`` has the size of ``FᵀF/n``).
For the pairwise hinge it starts at :data:`RHO_LOSS_PAIRWISE` ``/n`` and follows the same rule
with the loss block's primal residual, ``ρ_r ← ρ_r √(prim_r / dual)``, within
``[RHO_MIN, RHO_MAX]/n`` (a change refactors every output of the block: ``κ = ρ_r``); on
binary programs that rule cost iterations, on the coupled multi-class block it saves them.

Stopping
--------
OSQP's residuals, per block and relative: primal ``‖C_b u − w_b‖∞ / max(‖C_b u‖∞, ‖w_b‖∞)`` for
each block b, dual ``‖∇f(u) + Cᵀy‖∞`` over the largest of ``‖∇f(u)‖∞`` and the block terms
``‖C_bᵀy_b‖∞``; the normalisations are floored at :data:`RESIDUAL_FLOOR` times the loss
gradient at zero (dual) and that divided by the curvature (primal), so a zero solution
converges too. Both are checked every :data:`CHECK_EVERY` iterations; the solve stops when both
are at most ``tol`` — unless the certified gap of the iterate is still above
:data:`GAP_CONTINUE` (relative residuals can be small on badly scaled data far from the
optimum), when the tolerance is divided by 10, at most :data:`GAP_RETRIES` times; the
objective after the repair then typically lies within about ``tol`` of the optimum, and the
certified gap below says how far at most.

Robust programs
---------------
Program (b) with the hinge and an ℓ2 threat of radius ε (MATH.md §2; Bai, Gautam & Sojoudi give
ADMM for the binary case): binary,
``minimise (1/n) Σ_k (1 − t_k (F u)_k + ε‖(B u)_k‖₂)_+ + β Σ_g ‖u_g‖₂`` subject to
``E_i X̃ u_g ≥ ε‖Π u_g‖₂`` per row, with ``B u`` the per-sample slopes
``b_k = Σ_i d_ki Π(v_i − w_i)`` (``Π`` keeps the d perturbed coordinates, never the bias);
multi-class, the pairwise hinge ``Σ_{c≠y_k} (1 − (r_{k,y} − r_{k,c}) + ε‖b_{k,y} − b_{k,c}‖₂)_+``
of every output's ``r_c = F u_c`` and ``b_c = B u_c``. Two blocks join the splitting:

* the slopes: ``b = B u`` with penalty ``ρ_b`` (= ``κ_b``) beside ``r = F u``; the loss takes
  the joint prox of problems/losses.py: exact for the binary hinge (``Loss.robust_prox``); for
  the pairwise hinge (``Loss.robust_pairwise_prox``) by accelerated projected gradient on its
  dual, warm-started from the previous iteration's multipliers, until they move by less than
  :data:`PAIR_PROX_TOL` times the primal residual;
* the robust cone: ``(s, c) = (Â u, Π u)`` in ``K_g = {s_k ≥ r_k ‖c‖₂}`` with the rows' radii
  ``r_k = ε/‖x̃_k‖`` (Â has unit rows), penalties ``ρ_sΩ`` on ``s`` and ``ρ_c`` on ``c``; the
  weighted projection onto ``K_g`` is a one-dimensional convex problem in ``ν = ‖c‖``, solved
  exactly by Newton's method (:func:`project_robust_cone`). The block is stored as
  ``(Vs, Vc) = (s, c) + y/ρ`` as in the nominal case, ``(s, c) = Π_K(Vs, Vc)``.

``B`` sees only ``a = v − w`` as ``F`` does, so the same elimination holds with
``κF₀ᵀF₀ + κ_b B₀ᵀB₀`` in place of ``κF₀ᵀF₀`` (``B₀ᵀB₀ = DᵀD ⊗ Π``) and ``B_g + ρ_cΠ`` in place
of ``B_g``; there is no n × n form, so robust programs factor directly (``P·d̃ ≤``
:data:`MAX_FACTOR_SIZE` for "auto"). ``ρ_c`` is :data:`RHO_NORM` times the curvature, ``ρ_b``
:data:`RHO_SLOPE` ``·ρ_r·mean‖x̃‖²/d̃`` (the size of ``ρ_r FᵀF``); the row weights see the robust
slack ``Â u − r‖Π u‖``. Residuals and stopping are those above, with the two blocks added; for
the pairwise hinge ρ_r adapts as in the nominal case, within :data:`RHO_LOSS_ROBUST`.
When the radius covers every sample (:meth:`ConvexReLU.slopes_vanish`) the optimum has no
slopes and the solver runs the nominal program on the bias column alone (``info["slope_free"]``),
whose optimum and dual bound are the robust program's.

The dual (the conjugate of ``(1 − t r + ε‖b‖)_+`` is ``−α`` at ``(−αt, ξ)``, ``‖ξ‖ ≤ αε``,
``α ∈ [0, 1]``; the dual cone of ``K_g`` is ``{(λ, μ) : λ ≥ 0, ‖μ‖₂ ≤ Σ_k r_k λ_k}``)::

    maximise Σ_k a_k  subject to  ‖F_gᵀ(a∘t) + Â_gᵀλ_g − B_gᵀξ + Πᵀμ_g‖₂ ≤ β,
    0 ≤ a ≤ 1/n,  ‖ξ_k‖₂ ≤ ε a_k,  λ_g ≥ 0,  ‖μ_g‖₂ ≤ Σ_k r_k λ_{g,k},

and the iterate's ``a = −t∘y_r``, ``ξ = y_b``, ``λ = −y_s``, ``μ = −y_c``, each brought into its
set and scaled by one ``θ``, give the certified bound as below. For the pairwise hinge the dual
has one ``(α_{k,c}, ξ_{k,c})`` per pair in ``{0 ≤ α ≤ 1, ‖ξ‖ ≤ εα}``, objective ``Σ α/n``, and
``ν = (e_y Σ_c α_c − α)/n`` (likewise ``ξ`` for the slopes) in the norm constraints; the loss
prox's own multipliers are such a point.

Returned point, repair and certificate
--------------------------------------
The returned point is the prox block ``z`` (exactly group-sparse), made exactly feasible by the
repair of :mod:`convexrobust.solvers.relu_repair`; ``"repair_degraded"`` (an error unless
``accept_inaccurate``) when that raised the objective by more than ``10·tol·max(1, |F|)``,
exactly as there. ``Solution.gap`` is a certified relative duality gap of the repaired point. The
Lagrange dual of the program is::

    maximise  D(ν)   subject to  ‖F_gᵀν_c + Â_gᵀλ_{c,g}‖₂ ≤ β,  λ ≥ 0,

``D = Σ_c D_c(ν_c)`` for the losses that separate over outputs, ``D_c(ν) = νᵀt − (n/2)‖ν‖²``
(squared) or ``tᵀν`` on ``0 ≤ t∘ν ≤ 1/n`` (binary hinge); for the
pairwise hinge ``ν_{k,c} = −α_{k,c}`` (c ≠ y_k), ``ν_{k,y_k} = Σ_c α_{k,c}`` with ``α`` in the box
``[0, 1/n]`` and ``D = Σ α`` (the conjugate of a maximum of affine functions). The iterate gives
``ν = (t − F u)/n`` (squared) or ``−y_r`` clipped to the box (hinge; pairwise ``α = y_r``
clipped, off the true class) and ``λ = (−y_s)_+``; scaling both by the best ``θ ≥ 0`` that
satisfies the norm constraints (and the box; one θ for all outputs when α couples them) gives
a dual feasible point ``θν``, so ``(F(repaired) − D(θν)) / F(repaired)`` bounds the relative
distance to the optimum from above (``info["dual_bound"]`` is the lower bound itself).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.problems.losses import get_loss
from convexrobust.problems.relu import ConvexReLU
from convexrobust.solvers.first_order import (
    Budget,
    check_first_order_options,
    finish,
    group_soft_threshold,
    with_common_options,
)
from convexrobust.solvers.relu_repair import repaired
from convexrobust.solvers.solution import Solution

__all__ = ["MAX_FACTOR_SIZE", "admm_system_size", "admm_unsupported", "project_robust_cone",
           "solve_relu_admm"]

log = logging.getLogger(__name__)

#: Over-relaxation (OSQP suggests 1.6; 1.8 took fewer iterations on planted programs).
ALPHA = 1.8
#: Robust programs: ρ_c of the cone's copy of Π u, relative to the curvature, and ρ_b of the
#: slope block relative to ρ_r·mean‖x̃‖²/d̃ (which gives BᵀB the size of FᵀF).
RHO_NORM = 0.03
RHO_SLOPE = 0.3
#: Robust pairwise programs: ρ_r adapts within these bounds over n (beyond them the loss block's
#: penalty and the slopes' drift apart and the iterates oscillate or stall).
RHO_LOSS_ROBUST = (0.01, 0.3)
#: The robust pairwise prox runs until its multipliers (in [0, 1]) move by less than this times
#: the last primal residual (at most 1e-3).
PAIR_PROX_TOL = 1e-2
#: First ρ_z, relative to the data term's curvature (the mean diagonal of FᵀF/n).
RHO_GROUP = 0.02
#: ρ_s·tr(X̂ᵀΩ_gX̂)/d̃ is this times the curvature for the median group.
RHO_CONE = 3.0
#: ρ_r = RHO_LOSS / n (binary hinge, fixed); RHO_LOSS_PAIRWISE / n at first (pairwise hinge,
#: then adapted).
RHO_LOSS = 1.0
RHO_LOSS_PAIRWISE = 0.1
#: ρ_z follows OSQP's rule when that moves it by more than this factor, within
#: [RHO_MIN, RHO_MAX] × curvature.
RHO_ADAPT_FACTOR = 5.0
RHO_MIN, RHO_MAX = 1e-4, 1e4
#: ... and only while both residuals exceed RHO_ADAPT_FLOOR × the tolerance (below that the
#: rule chases round-off, and in float32 drove ρ_z down to an ill-conditioned system).
RHO_ADAPT_FLOOR = 10.0
#: The residual tolerance is never below this many machine epsilons of the working dtype
#: (float32 iterates stall above it).
EPS_FLOOR = 256
#: Row weights (module docstring): 1 on the rows with relative slack below WEIGHT_THRESHOLD,
#: WEIGHT_FLOOR elsewhere; first set after WEIGHT_START iterations, then after each further
#: max(WEIGHT_EVERY, iterations so far) iterations, at most WEIGHT_MAX_UPDATES times.
WEIGHT_THRESHOLD = 0.02
WEIGHT_FLOOR = 3e-4
WEIGHT_START = 50
WEIGHT_EVERY = 50
WEIGHT_MAX_UPDATES = 20
#: Pairwise hinge: a reweight after an output's first is made only when it changes at least this
#: fraction of the output's row weights (module docstring).
WEIGHT_MIN_CHANGE = 1e-3
#: Floor of the residuals' normalisations, relative to their natural scales (module docstring).
RESIDUAL_FLOOR = 1e-4
#: When the residuals reach the tolerance but the certified gap of the iterate (unrepaired) is
#: above GAP_CONTINUE, the tolerance is divided by 10 and the iteration goes on, at most
#: GAP_RETRIES times (programs whose outputs run as one block only).
GAP_CONTINUE = 0.5
GAP_RETRIES = 3
#: Residuals are evaluated (and ρ, Ω updated) every this many iterations.
CHECK_EVERY = 10
#: The largest linear system the solver factors, ``min(P·d̃, n)``: the dispatcher in
#: :mod:`convexrobust.solvers` sends larger programs to the AL solver.
MAX_FACTOR_SIZE = 4000
#: Elements of F₀ (or of its Woodbury counterpart) formed at once.
_CHUNK_ELEMENTS = 4_000_000


def admm_unsupported(program: object) -> str | None:
    """Why :func:`solve_relu_admm` cannot take ``program``, or None when it can."""
    if not isinstance(program, ConvexReLU):
        return f"the ADMM solver takes a ConvexReLU, got {type(program).__name__}"
    loss = get_loss(program.loss)
    if program.threat is not None:
        if loss.name == "hinge" and program.threat.dual == 2:
            return None
        return ("the ADMM solver takes robust programs with the hinge loss (binary or the "
                "pairwise multi-class hinge) and an ℓ2 threat only")
    if loss.name in ("squared", "hinge"):
        return None
    return (f"the ADMM solver takes the squared and the hinge loss, not the {program.loss} "
            "loss")


def admm_system_size(program: ConvexReLU) -> int:
    """Order of the matrix the ADMM factors: ``min(P·d̃, n)`` (robust programs: ``P·d̃``,
    their slope block has no n × n form)."""
    direct = program.n_patterns * program.Xb.shape[1]
    return direct if _loss_kind(program).startswith("robust") else min(direct, program.n_samples)


def _choose_factorisation(n: int, P: int, db: int, robust: bool) -> str:
    """``"direct"`` (Pd̃ × Pd̃) or ``"woodbury"`` (n × n): the one within
    :data:`MAX_FACTOR_SIZE` if only one is, else the one with fewer flops per refactorisation,
    ``(Pd̃)³`` against ``P n² d̃ + n³``; robust programs always ``"direct"``."""
    m = P * db
    if robust:
        return "direct"
    if (m <= MAX_FACTOR_SIZE) != (n <= MAX_FACTOR_SIZE):
        return "direct" if m <= MAX_FACTOR_SIZE else "woodbury"
    return "direct" if m ** 3 <= P * n * n * db + n ** 3 else "woodbury"


class _Operators:
    """The linear maps of the splitting on (C, 2P, d̃) groups; V's patterns, then W's."""

    def __init__(self, program: ConvexReLU, dtype: torch.dtype, device: torch.device):
        data = program.tensors(dtype, device)
        self.Xb = data["Xb"]  # (n, d̃)
        self.d = program.n_features
        eps, _ = program.radius_and_dual_exponent()
        if program.slopes_vanish():  # the nominal program on the bias alone has its optimum
            self.Xb = self.Xb.clone()
            self.Xb[:, : self.d] = 0
            eps = 0.0
        self.D = data["D"]  # (n, P)
        self.T = data["T"]  # (n, C)
        self.labels = data.get("labels")  # (n,) classification only
        self.P = program.n_patterns
        self.n = program.n_samples
        norms = torch.linalg.vector_norm(self.Xb, dim=1, keepdim=True)
        self.Xs = self.Xb / norms.clamp_min(torch.finfo(dtype).tiny)  # X̂: unit rows
        self.XsT = self.Xs.T.contiguous()
        self.XbT = self.Xb.T.contiguous()
        self.DT = self.D.T.contiguous()
        E = (2 * self.D - 1).T
        self.E2 = torch.cat([E, E], dim=0).contiguous()  # (2P, n)
        # robust programs: the cone rows' radii in X̂'s units, ε/‖x̃_k‖ (the ε-norms act on
        # the first d coordinates: the bias is never perturbed)
        big = torch.finfo(dtype).max ** 0.25  # a zero row (no bias) forces Π u = 0 anyway
        self.eps_rows = (eps / norms.squeeze(1).clamp_min(torch.finfo(dtype).tiny)
                         ).clamp(max=big)

    def cone(self, U: torch.Tensor) -> torch.Tensor:
        """``Â u`` for every group: (C, 2P, n)."""
        C, G, db = U.shape
        return (U.reshape(C * G, db) @ self.XsT).reshape(C, G, -1).mul_(self.E2)

    def cone_T(self, S: torch.Tensor, signed: bool = False) -> torch.Tensor:
        """``Âᵀ s`` for every group, (C, 2P, d̃); ``signed``: ``s`` already carries the signs E."""
        C, G, n = S.shape
        if not signed:
            S = S * self.E2
        return (S.reshape(C * G, n) @ self.Xs).reshape(C, G, -1)

    def predict0(self, A: torch.Tensor) -> torch.Tensor:
        """``F₀ a`` per output: (n, C) from (C, P, d̃)."""
        C, P, db = A.shape
        return (A.reshape(C * P, db) @ self.XbT).reshape(C, P, -1).mul_(self.DT).sum(dim=1).T

    def predict(self, U: torch.Tensor) -> torch.Tensor:
        """``F u`` per output: (n, C)."""
        return self.predict0(U[:, : self.P] - U[:, self.P:])

    def predict_T0(self, R: torch.Tensor) -> torch.Tensor:
        """``F₀ᵀ r`` per output: (C, P, d̃) from (n, C)."""
        return torch.matmul(self.DT.unsqueeze(0) * R.T.unsqueeze(1), self.Xb)

    def predict_T(self, R: torch.Tensor) -> torch.Tensor:
        """``Fᵀ r`` per output: (C, 2P, d̃)."""
        half = self.predict_T0(R)
        return torch.cat([half, -half], dim=1)

    def slopes(self, U: torch.Tensor) -> torch.Tensor:
        """``B u``: the per-sample slopes ``b_k = Σ_i d_ki (v_i − w_i)_{:d}`` per output,
        (C, n, d)."""
        return torch.matmul(self.D, U[:, : self.P, : self.d] - U[:, self.P:, : self.d])

    def slopes_T(self, S: torch.Tensor) -> torch.Tensor:
        """``Bᵀ s`` per output: (C, 2P, d̃) from (C, n, d) (zero on the bias coordinate)."""
        C, _, d = S.shape
        out = S.new_zeros((C, 2 * self.P, self.Xb.shape[1]))
        half = torch.matmul(self.DT, S)
        out[:, : self.P, :d] = half
        out[:, self.P:, :d] = -half
        return out

    def embed(self, Cc: torch.Tensor) -> torch.Tensor:
        """``Πᵀ c``: (C, 2P, d) on the first d coordinates of (C, 2P, d̃)."""
        if Cc.shape[-1] == self.Xb.shape[1]:
            return Cc
        return torch.nn.functional.pad(Cc, (0, self.Xb.shape[1] - Cc.shape[-1]))


class _Factor:
    """The factorisations of a block of outputs, stacked on the first axis (one per output:
    each has its own ρ and Ω): ``Binv`` (B, 2P, d̃, d̃) the blocks ``B_g⁻¹``, ``H`` (B, P, d̃, d̃)
    (direct mode only) and ``Minv`` the inverse of the reduced matrix (B, m, m)."""

    def __init__(self, parts: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]):
        self.Binv = torch.stack([p[0] for p in parts])
        self.H = None if parts[0][1] is None else torch.stack([p[1] for p in parts])
        self.Minv = torch.stack([p[2] for p in parts])

    def assign(self, k: int, part: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]
               ) -> None:
        """Replace output ``k``'s factorisation (after its ρ or Ω changed)."""
        self.Binv[k] = part[0]
        if self.H is not None:
            self.H[k] = part[1]
        self.Minv[k] = part[2]


class _System:
    """``M = κ FᵀF + blockdiag(B_g)`` (module docstring), inverted once per (ρ, Ω) of each
    output.

    Everything is factored in float64 and stored in the working dtype; the reduced matrix is
    stored as its explicit inverse, since one matrix product per iteration is several times
    faster than two triangular solves and the inverse is only recomputed when ρ or Ω change."""

    def __init__(self, ops: _Operators, mode: str):
        self.ops = ops
        self.mode = mode
        f64 = torch.float64
        Xb, D = ops.Xb.to(f64), ops.D.to(f64)
        n, P, db = ops.n, ops.P, Xb.shape[1]
        self.db = db
        self.Xs = ops.Xs.to(f64)
        self.eye = torch.eye(db, dtype=f64, device=Xb.device)
        if mode == "direct":  # F₀ᵀF₀, formed once
            gram = torch.zeros((P * db, P * db), dtype=f64, device=Xb.device)
            rows = max(1, _CHUNK_ELEMENTS // (P * db))
            for start in range(0, n, rows):
                block = D[start:start + rows, :, None] * Xb[start:start + rows, None, :]
                block = block.reshape(-1, P * db)
                gram += block.T @ block
            self.gram = gram
            self.pattern_gram = D.T @ D  # DᵀD, for the slopes' BᵀB = DᵀD ⊗ Π
            self.proj = torch.diag((torch.arange(db, device=Xb.device) < ops.d).to(f64))

    def factor(self, rho_z: float, rho_s: float, kappa: float, weights: torch.Tensor,
               rho_c: float = 0.0, kappa_b: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One output's ``(B_g⁻¹, H, M⁻¹)`` (see :class:`_Factor`); ``weights``: its Ω, (2P, n);
        robust programs add ``ρ_c Π`` to every ``B_g`` and ``κ_b DᵀD ⊗ Π`` to the reduced
        matrix (module docstring)."""
        ops, db, P = self.ops, self.db, self.ops.P
        f64 = torch.float64
        weights = weights.to(f64)
        XsT = self.Xs.T
        step = max(1, _CHUNK_ELEMENTS // XsT.numel())  # groups per (g, d̃, n) product
        B = torch.cat([torch.matmul(XsT.unsqueeze(0) * weights[g:g + step].unsqueeze(1), self.Xs)
                       for g in range(0, weights.shape[0], step)])
        B = rho_s * B + rho_z * self.eye  # (2P, d̃, d̃)
        if rho_c:
            B = B + rho_c * self.proj
        Binv = torch.cholesky_inverse(_cholesky(B))
        S = Binv[:P] + Binv[P:]  # H_i⁻¹
        H = None
        if self.mode == "direct":
            H = torch.cholesky_inverse(_cholesky(S))
            M = kappa * self.gram
            if kappa_b:
                M += kappa_b * torch.kron(self.pattern_gram, self.proj)
            idx = torch.arange(P * db, device=M.device).reshape(P, db)
            M[idx[:, :, None], idx[:, None, :]] += H
            H = H.to(ops.Xb.dtype)
        else:  # κ⁻¹I + Σ_i (D_iX̃L_i)(D_iX̃L_i)ᵀ with S_i = L_iL_iᵀ
            L = _cholesky(S)
            Xb, D = ops.Xb.to(f64), ops.D.to(f64)
            M = torch.zeros((ops.n, ops.n), dtype=f64, device=Xb.device)
            step = max(1, _CHUNK_ELEMENTS // (ops.n * db))
            for start in range(0, P, step):
                Y = torch.matmul(Xb.unsqueeze(0), L[start:start + step])  # (p, n, d̃)
                Y = (Y * D.T[start:start + step, :, None]).transpose(0, 1).reshape(ops.n, -1)
                M += Y @ Y.T
            M.diagonal().add_(1 / kappa)
        Minv = torch.cholesky_inverse(_cholesky(M)).to(ops.Xb.dtype)
        return Binv.to(ops.Xb.dtype), H, Minv

    def solve(self, rhs: torch.Tensor, factor: _Factor) -> torch.Tensor:
        """``M⁻¹ rhs`` for (B, 2P, d̃), output ``k`` with ``factor``'s ``k``-th matrices."""
        P = self.ops.P
        x = _blocks(rhs, factor.Binv)  # B_g⁻¹ r_g
        p = x[:, :P] - x[:, P:]
        C, _, db = p.shape
        if self.mode == "direct":
            a = torch.bmm(_blocks(p, factor.H).reshape(C, 1, P * db), factor.Minv)
            coupling = _blocks(p - a.reshape(C, P, db), factor.H)  # κF₀ᵀF₀ a
        else:
            pred = self.ops.predict0(p).T.unsqueeze(-1)  # (B, n, 1)
            coupling = self.ops.predict_T0(torch.bmm(factor.Minv, pred).squeeze(-1).T)
        shift = _blocks(torch.cat([coupling, coupling], dim=1), factor.Binv)
        shift[:, :P].neg_()
        return x.add_(shift)


def _blocks(R: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Every group's row vector times its symmetric block: (C, G, d̃) × (C, G, d̃, d̃)."""
    return torch.matmul(R.unsqueeze(-2), B).squeeze(-2)


def _cholesky(M: torch.Tensor) -> torch.Tensor:
    L, info = torch.linalg.cholesky_ex(M)
    if bool((info != 0).any()):
        raise SolverFailedError(
            "the ADMM system matrix is not numerically positive definite; rescale the data or "
            "use method='al'", status="numerical_error", solver="torch")
    return L


def _inf(x: torch.Tensor) -> float:
    return float(x.abs().max()) if x.numel() else 0.0


def _rel(num: float, *scales: float) -> float:
    return num / max(max(scales), 1e-300)


def _loss_kind(program: ConvexReLU) -> str:
    """``"squared"``, ``"hinge"`` (binary), ``"pairwise"`` (the multi-class hinge), or under
    an ℓ2 threat ``"robust_hinge"`` / ``"robust_pairwise"``."""
    if get_loss(program.loss).name == "squared":
        return "squared"
    pairwise = program.pairwise_margins
    if program.threat is not None and not program.slopes_vanish():
        return "robust_pairwise" if pairwise else "robust_hinge"
    return "pairwise" if pairwise else "hinge"


def _output_blocks(program: ConvexReLU) -> list[list[int]]:
    """The outputs that iterate together: the pairwise hinge couples all of them; otherwise
    every output is a program of its own."""
    C = program.n_outputs
    coupled = _loss_kind(program) in ("pairwise", "robust_pairwise")
    return [list(range(C))] if coupled else [[c] for c in range(C)]


@with_common_options
def solve_relu_admm(program: ConvexReLU, *, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float64, tol: float = 1e-3,
                    max_iters: int = 20_000, time_limit: float | None = None, seed: int = 0,
                    progress: bool = False, accept_inaccurate: bool = False) -> Solution:
    """Solve a nominal :class:`ConvexReLU` program with the squared loss (binary, regression or
    one-vs-all multi-class) or the hinge loss (binary, or the pairwise multi-class hinge), or a
    robust one with the hinge (binary or pairwise) and an ℓ2 threat, by ADMM with a cached
    factorisation (module docstring). Other programs raise
    :class:`InvalidInputError` (use the AL solver,
    :func:`~convexrobust.solvers.relu_first_order.solve_relu_torch`).

    ``tol`` (default 1e-3, OSQP's) is a **relative residual**: the solve stops when OSQP's
    scaled primal and dual residuals (module docstring, "Stopping") are both at most ``tol``,
    never below :data:`EPS_FLOOR` machine epsilons of ``dtype``. ``Solution.gap`` is not that
    residual but the **certified** relative duality gap of the repaired point (``gap_kind =
    "certified_gap"``); the residuals are ``info["primal_residual"]`` and
    ``info["dual_residual"]``. The linear system is factored in float64 whatever ``dtype``.
    ``"repair_degraded"`` (module docstring) is a failure unless ``accept_inaccurate``.
    """
    reason = admm_unsupported(program)
    if reason is not None:
        raise InvalidInputError(reason + "; use the augmented Lagrangian solver (method='al')")
    check_first_order_options(tol, max_iters, time_limit, seed, dtype)
    start = time.perf_counter()
    device = check_device(device)
    torch.manual_seed(int(seed))

    ops = _Operators(program, dtype, device)
    n, P, db = ops.n, ops.P, ops.Xb.shape[1]
    mode = _choose_factorisation(n, P, db, _loss_kind(program).startswith("robust"))
    system = _System(ops, mode)
    budget = Budget(max_iters, time_limit, progress, desc="torch relu admm")
    eps = max(tol, EPS_FLOOR * float(torch.finfo(dtype).eps))
    results = []
    try:
        # independent outputs (the loss, the group lasso and the cones all separate over them)
        # run one after the other, sharing F₀ᵀF₀ and the budget; coupled ones run together
        for outputs in _output_blocks(program):
            results.append(_admm_block(program, ops, system, budget, outputs, eps))
    finally:
        budget.close()
    status = next((r.status for r in results if r.status != "optimal"), "optimal")
    prim = max(r.prim for r in results)
    dual = max(r.dual for r in results)

    data_scale = float(torch.linalg.vector_norm(ops.Xb, dim=-1).max())
    trial = repaired(program, torch.cat([r.Z for r in results]), data_scale)
    objective = trial.objective_after
    bound = sum(r.bound for r in results)
    duality_gap = max(objective - bound, 0.0) / max(abs(objective), 1e-300)
    wall = time.perf_counter() - start
    if status == "optimal" and trial.degraded(tol):
        status = "repair_degraded"
    rho_z = [rho for r in results for rho in r.rho_z]
    rho_s = [rho for r in results for rho in r.rho_s]
    single = len(rho_z) == 1
    info: dict[str, object] = {
        "method": "admm", "factorisation": mode, "slope_free": program.slopes_vanish(),
        "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "primal_residual": prim, "dual_residual": dual, "stationarity": dual,
        "duality_gap": duality_gap, "dual_bound": bound,
        "rho": rho_z[0] if single else rho_z, "rho_cone": rho_s[0] if single else rho_s,
        "rho_loss": results[0].rho_r,
        "reweights": sum(r.reweights for r in results),
        "rho_adaptations": sum(r.adaptations for r in results),
        "refactorisations": sum(r.refactorisations for r in results),
        "violation_before_repair": trial.violation_before,
        "objective_before_repair": trial.objective_before,
        "repaired_groups_moved": trial.moved, "repaired_groups_zeroed": trial.zeroed,
        "repaired_groups_rehomed": trial.rehomed,
    }
    return finish(
        program, {"V": trial.V, "W": trial.W}, status, accept_inaccurate=accept_inaccurate,
        failure=(f"torch (ADMM) stopped with status {status!r} after {budget.iterations} "
                 f"iterations (primal residual {prim:.2e}, dual residual {dual:.2e}, tol {tol:g})."
                 " Raise max_iters / time_limit, tighten tol (repair_degraded: the constraints "
                 "were not met closely enough)"),
        wall_time=wall, iterations=budget.iterations, solver_objective=trial.objective_before,
        gap=duality_gap, gap_kind="certified_gap", info=info)


@dataclass
class _BlockResult:
    """One block of outputs' ADMM: its group-lasso block ``Z`` (B, 2P, d̃), final residuals
    (the worst output's), its share of the dual bound, final penalties (per output; ``rho_r``
    None without a loss block) and counts of reweights, ρ_z and ρ_r adaptations and
    refactorisations (beyond the first factorisations)."""

    Z: torch.Tensor
    status: str
    prim: float
    dual: float
    bound: float
    rho_z: list[float]
    rho_s: list[float]
    rho_r: float | None
    reweights: int
    adaptations: int
    refactorisations: int


def _admm_block(program: ConvexReLU, ops: _Operators, system: _System, budget: Budget,
                outputs: list[int], eps: float) -> _BlockResult:
    """The ADMM of the module docstring on the ``outputs`` together (each with its own ρ, Ω
    and factorisation; a loss block that couples them takes one joint prox)."""
    kind = _loss_kind(program)
    loss = get_loss(program.loss)
    with_loss_block = kind != "squared"  # hinge losses: r = F u is a block of its own
    robust = kind.startswith("robust")  # + the slope block b = B u, the cone's copy c = Π u
    pairwise = kind in ("pairwise", "robust_pairwise")  # the outputs couple in the loss
    n, P, db, d = ops.n, ops.P, ops.Xb.shape[1], ops.d
    B = len(outputs)
    beta, T = program.beta, ops.T[:, outputs]
    dtype, device = ops.Xb.dtype, ops.Xb.device
    # the data term's curvature (mean diagonal of FᵀF/n) sets the penalties' scale
    curvature = max(float(ops.Xb.square().sum(dim=1) @ ops.D.sum(dim=1)) / (n * P * db), 1e-300)
    rho_z = [RHO_GROUP * curvature] * B
    rho_r = (RHO_LOSS_PAIRWISE if pairwise else RHO_LOSS) / n
    kappa = rho_r if with_loss_block else 1.0 / n
    weights = torch.ones((B, 2 * P, n), dtype=dtype, device=device)

    def cone_penalty(w: torch.Tensor) -> float:
        return RHO_CONE * curvature * db / max(float(w.sum(dim=1).median()), 1.0)

    def per_output(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device).view(B, 1, 1)

    rho_s = [cone_penalty(weights[k]) for k in range(B)]
    row_penalty = per_output(rho_s) * weights * ops.E2  # ρ_sΩ with the signs of Â folded in
    # robust programs: ρ_c of the cone's copy of Π u, ρ_b (= κ_b) of the slope block
    rho_c = [RHO_NORM * curvature if robust else 0.0] * B
    mean_sq = float(ops.Xb.square().sum(dim=1).mean())
    slope_ratio = RHO_SLOPE * mean_sq / db if robust else 0.0
    rho_b = slope_ratio * rho_r
    status = budget.exhausted() or "optimal"  # nothing left for this block: it stays 0
    factor = None
    if status == "optimal":  # the same for every output at the start (one ρ, Ω ≡ 1)
        first = system.factor(rho_z[0], rho_s[0], kappa, weights[0], rho_c[0], rho_b)
        factor = _Factor([first] * B)  # stacked copies

    U = torch.zeros((B, 2 * P, db), dtype=dtype, device=device)
    Z = torch.zeros_like(U)
    Yz = torch.zeros_like(U)
    # the cone block: s = Π_K(Vs) (nominal: Vs₊), y_s = ρ_sΩ∘(Vs − s); robust, jointly with
    # the copy c of Π u: (s, c) = Π_K(Vs, Vc), y_c = ρ_c(Vc − c)
    Vs = torch.zeros((B, 2 * P, n), dtype=dtype, device=device)
    S = torch.zeros_like(Vs)
    Ys = torch.zeros_like(Vs)
    Vc = torch.zeros((B, 2 * P, d if robust else 0), dtype=dtype, device=device)
    Cc, Yc = torch.zeros_like(Vc), torch.zeros_like(Vc)
    R = torch.zeros((n, B), dtype=dtype, device=device)
    Yr = torch.zeros_like(R)
    FU = torch.zeros_like(R)
    Bs = torch.zeros((B, n, d if robust else 0), dtype=dtype, device=device)  # the slopes
    Yb, BU = torch.zeros_like(Bs), torch.zeros_like(Bs)
    radius = program.radius_and_dual_exponent()[0]
    pair_duals = None  # the robust pairwise prox's multipliers (α, ξ)
    norms_c = None  # the robust cone projection's ‖c‖ (its warm start)
    q_term = None if with_loss_block else ops.predict_T(T) / n  # −q = Fᵀt/n
    # floors of the residuals' normalisations: the loss gradient at zero, and the step it gives
    if pairwise:  # ∂/∂r of Σ_{c≠y}(1 − r_y + r_c)_+ at r = 0, times n
        others = program.tensors(dtype, device)["others"]
        slope0 = others - (program.n_outputs - 1) * (1 - others)
    else:
        slope0 = T
    g_floor = [RESIDUAL_FLOOR * max(_inf(g) / n, 1e-300)
               for g in ops.predict_T0(slope0).unbind(0)]
    u_floor = [g / curvature for g in g_floor]
    rz, bz = per_output(rho_z), beta / per_output(rho_z)
    rc = per_output(rho_c)
    tiny = torch.finfo(dtype).tiny

    prim = dual = math.inf
    reweights, next_reweight, last_refactor = [0] * B, [WEIGHT_START] * B, [0] * B
    adaptations = refactorisations = iterations = last_loss_change = gap_checks = 0
    while status == "optimal":
        if robust:  # ρ_sΩ∘s − y_s = ρ_sΩ∘(2s − Vs), and ρ_c c − y_c = ρ_c(2c − Vc)
            rhs = ops.cone_T((2 * S - Vs).mul_(row_penalty), signed=True)
            rhs += ops.embed((2 * Cc - Vc) * rc)
            rhs += ops.slopes_T(rho_b * Bs - Yb)
        else:  # the same with s = Vs₊: 2s − Vs = |Vs|
            rhs = ops.cone_T(Vs.abs().mul_(row_penalty), signed=True)
        rhs.add_(Z * rz).sub_(Yz)
        rhs += ops.predict_T(rho_r * R - Yr) if with_loss_block else q_term
        U = system.solve(rhs, factor)
        AU = ops.cone(U)
        if robust:
            Vs.add_(AU - S, alpha=ALPHA)
            Vc.add_(U[..., :d] - Cc, alpha=ALPHA)
            S, Cc, norms_c = project_robust_cone(Vs, Vc, ops.eps_rows, row_penalty.abs(), rc,
                                                 start=norms_c)
        else:
            Vs.add_(AU - Vs.clamp(min=0), alpha=ALPHA)
        Zh = ALPHA * U + (1 - ALPHA) * Z
        Z = group_soft_threshold(Zh + Yz / rz, bz, tiny)
        Yz += rz * (Zh - Z)
        if with_loss_block:
            FU = ops.predict(U)
            Rh = ALPHA * FU + (1 - ALPHA) * R
            if robust:
                BU = ops.slopes(U)
                Bh = ALPHA * BU + (1 - ALPHA) * Bs
                steps = (radius, 1.0 / (n * rho_r), 1.0 / (n * rho_b))
                if pairwise:  # warm-started from the last multipliers, as exact as it gets
                    R, Bs, pair_duals = loss.robust_pairwise_prox(
                        Rh + Yr / rho_r, Bh + Yb / rho_b, ops.labels, *steps,
                        duals=pair_duals, tol=PAIR_PROX_TOL * min(prim, 1e-3))
                else:
                    R, slopes = loss.robust_prox(Rh + Yr / rho_r, (Bh + Yb / rho_b)[0], T,
                                                 *steps)
                    Bs = slopes.unsqueeze(0)
                Yb += rho_b * (Bh - Bs)
            elif pairwise:
                R = loss.pairwise_prox(Rh + Yr / rho_r, ops.labels, 1.0 / (n * rho_r))
            else:
                R = loss.prox(Rh + Yr / rho_r, T, 1.0 / (n * rho_r))
            Yr += rho_r * (Rh - R)
        budget.tick()
        iterations += 1
        exhausted = budget.exhausted()
        scheduled = [reweights[k] < WEIGHT_MAX_UPDATES and iterations >= next_reweight[k]
                     for k in range(B)]
        if iterations % CHECK_EVERY and exhausted is None and not any(scheduled):
            continue

        # residuals (module docstring), per output
        if not robust:
            S = Vs.clamp(min=0)
        Ys = (Vs - S).mul_(per_output(rho_s) * weights)
        cone_gap = (AU - S).abs_()
        terms = [Yz, ops.cone_T(Ys)]
        terms.append(ops.predict_T(Yr) if with_loss_block
                     else ops.predict_T(ops.predict(U)) / n - q_term)
        if robust:
            Yc = (Vc - Cc) * rc
            terms += [ops.embed(Yc), ops.slopes_T(Yb)]
        total = sum(terms)
        prim_blocks, duals, worst = [], [], []
        for k in range(B):
            worst.append(int(cone_gap[k].argmax()))
            blocks = [_rel(_inf(U[k] - Z[k]), _inf(U[k]), _inf(Z[k]), u_floor[k]),
                      _rel(float(cone_gap[k].view(-1)[worst[k]]), _inf(AU[k]), _inf(S[k]),
                           u_floor[k])]
            if robust:
                blocks += [_rel(_inf(U[k, :, :d] - Cc[k]), _inf(U[k, :, :d]), _inf(Cc[k]),
                                u_floor[k]),
                           _rel(_inf(BU[k] - Bs[k]), _inf(BU[k]), _inf(Bs[k]), u_floor[k])]
            if with_loss_block:
                blocks.append(_rel(_inf(FU[:, k] - R[:, k]), _inf(FU[:, k]), _inf(R[:, k]),
                                   RESIDUAL_FLOOR))
            prim_blocks.append(blocks)
            duals.append(_rel(_inf(total[k]), *(_inf(t[k]) for t in terms), g_floor[k]))
        prim = max(max(b) for b in prim_blocks)
        dual = max(duals)
        budget.bar.set_postfix(outputs=f"{outputs[0]}-{outputs[-1]}" if B > 1 else outputs[0],
                               prim=f"{prim:.1e}", dual=f"{dual:.1e}")
        log.debug("admm outputs %s, %d: primal %.2e dual %.2e rho_z %s rho_s %s", outputs,
                  iterations, prim, dual, rho_z, rho_s)
        if prim <= eps and dual <= eps:
            if len(outputs) < program.n_outputs or gap_checks >= GAP_RETRIES:
                break
            # the residuals are relative and can be small on badly scaled data while the point
            # is far from optimal: with a certified gap above GAP_CONTINUE, tighten and go on
            bound = _dual_bound(program, ops, kind, outputs, U, Ys, Yr, Yb, Yc, pair_duals)
            V, W = Z.to(torch.float64).cpu().split(P, dim=1)
            value = float(program.objective_torch(V, W))
            if value - bound <= GAP_CONTINUE * abs(value):
                break
            gap_checks += 1
            eps = max(eps / 10, EPS_FLOOR * float(torch.finfo(dtype).eps))
        if exhausted is not None:
            status = exhausted
            break

        # penalties and row weights (module docstring), per output; each change of an output's
        # ρ or Ω is a refactorisation of its system
        refactor_all = False
        if pairwise and iterations - last_loss_change >= WEIGHT_EVERY:
            prim_r = max(b[-1] for b in prim_blocks)
            if min(prim_r, dual) > RHO_ADAPT_FLOOR * eps:
                scale_r = math.sqrt(prim_r / max(dual, 1e-300))
                low, top = RHO_LOSS_ROBUST if robust else (RHO_MIN, RHO_MAX)
                scale_r = min(max(scale_r, low / (n * rho_r)), top / (n * rho_r))
                if not 1 / RHO_ADAPT_FACTOR < scale_r < RHO_ADAPT_FACTOR:
                    rho_r *= scale_r
                    kappa, rho_b = rho_r, slope_ratio * rho_r
                    refactor_all = True
                    last_loss_change = iterations
                    adaptations += 1
        for k in range(B):
            settled = iterations - last_refactor[k] >= WEIGHT_EVERY
            reweight = scheduled[k] or (settled and reweights[k] < WEIGHT_MAX_UPDATES and float(
                weights[k].view(-1)[worst[k]]) < 1)
            scale = 1.0
            if settled and min(prim_blocks[k][0], duals[k]) > RHO_ADAPT_FLOOR * eps:
                scale = math.sqrt(prim_blocks[k][0] / max(duals[k], 1e-300))
                scale = min(max(scale, RHO_MIN * curvature / rho_z[k]),
                            RHO_MAX * curvature / rho_z[k])
                if 1 / RHO_ADAPT_FACTOR < scale < RHO_ADAPT_FACTOR:
                    scale = 1.0
            if reweight:
                slack = AU[k]
                if robust:
                    norms = torch.linalg.vector_norm(U[k, :, :d], dim=-1, keepdim=True)
                    slack = slack - ops.eps_rows * norms
                new = _row_weights(U[k], slack, Vs[k] < S[k])
                if pairwise and reweights[k] > 0:
                    # a reweight that moves almost no row is not worth a factorisation here
                    if scheduled[k]:
                        next_reweight[k] = iterations + max(WEIGHT_EVERY, iterations)
                    reweight = float((new != weights[k]).float().mean()) >= WEIGHT_MIN_CHANGE
            if reweight:
                new_rho_s = cone_penalty(new)
                # keep s and y_s: Vs₋ = y_s/(ρ_sΩ) scales inversely with the row's penalty
                Vs[k] = S[k] + (Vs[k] - S[k]).mul_((rho_s[k] * weights[k])
                                                   / (new_rho_s * new))
                weights[k], rho_s[k] = new, new_rho_s
                row_penalty[k] = new_rho_s * new * ops.E2
                reweights[k] += 1
                next_reweight[k] = iterations + max(WEIGHT_EVERY, iterations)
            if scale != 1.0:
                rho_z[k] *= scale
                adaptations += 1
            if reweight or scale != 1.0 or refactor_all:
                factor.assign(k, system.factor(rho_z[k], rho_s[k], kappa, weights[k], rho_c[k],
                                               rho_b))
                last_refactor[k] = iterations
                refactorisations += 1
        rz, bz = per_output(rho_z), beta / per_output(rho_z)
    bound = _dual_bound(program, ops, kind, outputs, U, Ys, Yr, Yb, Yc, pair_duals)
    return _BlockResult(Z, status, prim, dual, bound, rho_z, rho_s,
                        rho_r if with_loss_block else None, sum(reweights), adaptations,
                        refactorisations)


def _row_weights(U: torch.Tensor, slack: torch.Tensor, multiplier: torch.Tensor
                 ) -> torch.Tensor:
    """Ω, (2P, n), of one output (``U`` (2P, d̃), the cone rows' ``slack`` and whether they
    carry a ``multiplier``, (2P, n)): 1 on the rows that are near-active (slack below
    :data:`WEIGHT_THRESHOLD` relative to the group's norm, violated, or with a multiplier),
    :data:`WEIGHT_FLOOR` elsewhere."""
    norms = torch.linalg.vector_norm(U, dim=-1, keepdim=True)  # (2P, 1)
    scale = norms.clamp_min(1e-3 * float(norms.max()) + torch.finfo(U.dtype).tiny)
    near = (slack / scale < WEIGHT_THRESHOLD) | multiplier
    return torch.where(near, 1.0, WEIGHT_FLOOR).to(U.dtype)


def _dual_bound(program: ConvexReLU, ops: _Operators, kind: str, outputs: list[int],
                U: torch.Tensor, Ys: torch.Tensor, Yr: torch.Tensor, Yb: torch.Tensor,
                Yc: torch.Tensor, pair_duals: tuple[torch.Tensor, torch.Tensor] | None) -> float:
    """The block's share of a lower bound on the optimum, from its iterate and multipliers
    (module docstring), evaluated in float64. The dual needs the loss's conjugate: the
    hinge's (binary, pairwise and robust) and the squared loss's are written here."""
    if ops.Xb.dtype != torch.float64:
        ops = _Operators(program, torch.float64, ops.Xb.device)
        U, Ys, Yr, Yb, Yc = (x.to(torch.float64) for x in (U, Ys, Yr, Yb, Yc))
        if pair_duals is not None:
            pair_duals = (pair_duals[0].to(torch.float64), pair_duals[1].to(torch.float64))
    n, T = ops.n, ops.T[:, outputs]
    lam = torch.clamp(-Ys, min=0)
    if kind.startswith("robust"):
        return _robust_dual_bound(program, ops, kind, T, lam, Yr, Yb, Yc, pair_duals)
    if kind == "squared":
        nu = (T - ops.predict(U)) / n
    elif kind == "hinge":
        nu = torch.clamp(-Yr * T, min=0, max=1.0 / n) * T
    else:  # pairwise: α_kc = y_r clipped to [0, 1/n] off the true class, ν = −α + e_y Σ_c α
        alpha = torch.clamp(Yr, min=0, max=1.0 / n) * program.tensors(torch.float64,
                                                                       Yr.device)["others"]
        nu = -alpha
        nu[torch.arange(n, device=nu.device), ops.labels] = alpha.sum(dim=1)
    slope = ops.predict_T(nu) + ops.cone_T(lam)  # (B, 2P, d̃)
    worst = torch.linalg.vector_norm(slope, dim=-1).max(dim=1).values  # (B,)
    theta = program.beta / worst.clamp_min(1e-300)  # the largest feasible scaling
    if kind == "pairwise":  # one scaling for all outputs (α couples them), inside the box
        top = float(alpha.max())
        theta = min(float(theta.min()), 1.0 / (n * top) if top > 0 else math.inf)
        return theta * float(alpha.sum()) if math.isfinite(theta) else 0.0
    linear = (nu * T).sum(dim=0)  # (B,)
    if kind == "hinge":
        top = (nu * T).max(dim=0).values.clamp_min(1e-300)
        theta = torch.minimum(theta, 1.0 / (n * top))  # stay in the box
        value = theta * linear
    else:
        quad = n * nu.square().sum(dim=0)
        theta = torch.minimum(theta, linear.clamp_min(0) / quad.clamp_min(1e-300))
        value = theta * linear - 0.5 * theta.square() * quad
    return float(value.sum())


def _robust_dual_bound(program: ConvexReLU, ops: _Operators, kind: str, T: torch.Tensor,
                       lam: torch.Tensor, Yr: torch.Tensor, Yb: torch.Tensor, Yc: torch.Tensor,
                       pair_duals: tuple[torch.Tensor, torch.Tensor] | None) -> float:
    """The dual bound of the robust hinge programs (module docstring, "Robust programs").
    Binary: ``a = −t∘y_r`` in the box ``[0, 1/n]`` and the slope multipliers ``ξ_k = y_{b,k}``
    shrunk into ``‖ξ_k‖₂ ≤ ε a_k``; pairwise: the loss prox's own ``(α, ξ)`` (already in
    ``{0 ≤ α ≤ 1, ‖ξ‖ ≤ εα}``), ``ν = (e_y Σ_c α_c − α)/n`` and likewise for the slopes. With
    the cone's ``λ = (−y_s)_+`` and ``μ = −y_c`` shrunk into ``‖μ_g‖₂ ≤ Σ_k r_k λ_{g,k}``, the
    largest ``θ ≤ 1`` that keeps ``θ·`` all of them feasible gives ``θ Σ a``."""
    eps, n = program.radius_and_dual_exponent()[0], ops.n
    if kind == "robust_pairwise":
        if pair_duals is None:  # no iteration ran: the zero dual point
            return 0.0
        alpha, xi = pair_duals  # (n, C), (C, n, d)
        rows = torch.arange(n, device=alpha.device)
        nu = -alpha / n
        nu[rows, ops.labels] = alpha.sum(dim=1) / n
        slopes = xi / n
        slopes[ops.labels, rows] = -xi.sum(dim=0) / n
        value, top = float(alpha.sum()) / n, 1.0 / n
    else:
        a = torch.clamp(-Yr * T, min=0, max=1.0 / n)  # (n, 1)
        xi = Yb[0]
        xi_norm = torch.linalg.vector_norm(xi, dim=-1, keepdim=True)
        xi = xi * torch.clamp(eps * a / xi_norm.clamp_min(1e-300), max=1.0)
        nu, slopes = a * T, -xi.unsqueeze(0)
        value, top = float(a.sum()), float(a.max())
    mu = -Yc
    cap = (lam * ops.eps_rows).sum(dim=-1, keepdim=True)
    mu_norm = torch.linalg.vector_norm(mu, dim=-1, keepdim=True)
    mu = mu * torch.clamp(cap / mu_norm.clamp_min(1e-300), max=1.0)
    slope = ops.predict_T(nu) + ops.slopes_T(slopes) + ops.cone_T(lam) + ops.embed(mu)
    worst = float(torch.linalg.vector_norm(slope, dim=-1).max())
    theta = min(program.beta / max(worst, 1e-300), 1.0 / (n * top) if top > 0 else math.inf)
    return theta * value if math.isfinite(theta) else 0.0


def project_robust_cone(Vs: torch.Tensor, Vc: torch.Tensor, radii: torch.Tensor,
                        weights: torch.Tensor, rho_c: torch.Tensor, max_steps: int = 50,
                        start: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The projection of ``(Vs, Vc)`` onto the robust cone ``K = {(s, c) : s_k ≥ r_k ‖c‖₂}``
    of every group, in the metric ``Σ_k w_k (s_k − ·)² + ρ_c ‖c − ·‖²`` (module docstring,
    "Robust programs"). ``Vs`` (B, G, n) the signed cone rows, ``Vc`` (B, G, d), ``radii`` the
    rows' ``r_k = ε/‖x̃_k‖`` (n,), ``weights`` ``w`` (B, G, n), ``rho_c`` (B, 1, 1).

    For a fixed ``ν = ‖c‖`` the best point is ``s = max(Vs, r ν)``, ``c = Vc·ν/‖Vc‖``; the
    cost ``h(ν) = Σ_k w_k (r_k ν − Vs_k)_+² + ρ_c (‖Vc‖ − ν)²`` is convex on ``[0, ‖Vc‖]`` and
    its derivative convex, increasing and piecewise linear, so Newton's method from ``ν = ‖Vc‖``
    decreases monotonically to its root (or to 0), and from any ``start`` (B, G, 1) — the last
    call's ``ν``, a warm start — its first step lands at or beyond the root and the rest
    decrease; it stops exactly at the root once the active rows no longer change; ``max_steps``
    bounds the steps (any ``ν`` gives a point of K). Returns ``(s, c, ν)``."""
    norm_c = torch.linalg.vector_norm(Vc, dim=-1, keepdim=True)  # (B, G, 1)
    wr = weights * radii
    wr2 = wr * radii
    nu = norm_c.clone() if start is None else torch.minimum(start, norm_c)
    active = None
    for _ in range(max_steps):
        excess = radii * nu - Vs
        now = excess > 0
        if active is not None and torch.equal(now, active):
            break
        active = now
        grad = (wr * excess.clamp(min=0)).sum(dim=-1, keepdim=True) - rho_c * (norm_c - nu)
        curv = (wr2 * now).sum(dim=-1, keepdim=True) + rho_c
        nu = (nu - grad / curv).clamp(min=0)
    S = torch.maximum(Vs, radii * nu)
    Cc = Vc * (nu / norm_c.clamp_min(torch.finfo(Vc.dtype).tiny))
    return S, Cc, nu
