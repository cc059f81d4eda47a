r"""Projected gradient descent (PGD) attacks for evaluating classifiers empirically.

Reference: A. Madry, A. Makelov, L. Schmidt, D. Tsipras and A. Vladu, "Towards Deep Learning
Models Resistant to Adversarial Attacks", ICLR 2018.  The loss is the margin loss of
N. Carlini and D. Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017.

For a classifier with scores :math:`s(x) \in \mathbb{R}^C` and label :math:`y` the margin is

.. math::

    \mu(x, y) = s_y(x) - \max_{k \ne y} s_k(x),

and for a binary classifier with a single score :math:`s(x)` (class 1 iff :math:`s(x) > 0`)
it is :math:`\mu(x, y) = (2y - 1)\, s(x)`.  A sample is misclassified iff :math:`\mu < 0`.
PGD approximately solves :math:`\min_{\|\delta\|_p \le \varepsilon} \mu(x + \delta, y)`
(an upper bound on the true worst-case margin; certificates give lower bounds) by

.. math::

    \delta \leftarrow \Pi_{\|\cdot\|_p \le \varepsilon}
    \bigl(\delta - \eta\, d(\nabla_\delta \mu)\bigr),

with :math:`d(g) = \operatorname{sign}(g)` for :math:`p = \infty` (steepest descent for the
:math:`\ell_\infty` norm) and :math:`d(g) = g / \|g\|_2` for :math:`p = 2`.

:func:`auto_attack` runs the standard AutoAttack of F. Croce and M. Hein, "Reliable Evaluation of
Adversarial Robustness with an Ensemble of Diverse Parameter-free Attacks", ICML 2020 (APGD-CE,
APGD-T, FAB-T and Square), through its authors' package ``pyautoattack`` (the optional extra
``pip install 'convexrobust[attack]'``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import sys
from collections.abc import Iterator
from types import ModuleType

import torch
from torch import Tensor, nn

from convexrobust.errors import InvalidInputError, InvalidInputTypeError, SolverUnavailableError
from convexrobust.inputs import apply_model, class_indices
from convexrobust.threat import parse_norm

__all__ = ["AUTOATTACK_VERSIONS", "auto_attack", "autoattack_version", "fgsm_attack", "margin",
           "pgd_attack"]

logger = logging.getLogger(__name__)

#: Versions :func:`auto_attack` runs: ``"standard"`` is AutoAttack as published (report these
#: numbers); ``"fast"`` is its first attack alone (APGD-CE, 100 iterations, one restart), a cheap
#: smoke test for CI that is *not* AutoAttack and must not be reported as such.
AUTOATTACK_VERSIONS = ("standard", "fast")

def margin(scores: Tensor, y: Tensor) -> Tensor:
    r"""Classification margin :math:`\mu`; negative iff the sample is misclassified.

    Args:
        scores: ``(n, C)`` class scores with :math:`C \ge 2`, or ``(n,)`` / ``(n, 1)`` single
            scores of a binary classifier (class 1 iff the score is positive).
        y: ``(n,)`` integer labels (in ``{0, 1}`` for single-score binary classifiers).

    Returns:
        ``(n,)`` tensor :math:`s_y - \max_{k \ne y} s_k`, or :math:`(2y - 1)\, s` in the binary
        single-score case.
    """
    y = y.reshape(-1)
    if scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1):
        s = scores.reshape(-1)
        return (2 * y.to(s.dtype) - 1) * s
    if scores.ndim != 2:
        raise ValueError(
            f"scores must have shape (n,), (n, 1) or (n, C), got {tuple(scores.shape)}"
        )
    labels = y.long().unsqueeze(1)
    true = scores.gather(1, labels).squeeze(1)
    others = scores.scatter(1, labels, float("-inf"))
    return true - others.max(dim=1).values


def _per_sample(value: float | Tensor, n: int, like: Tensor, name: str) -> Tensor:
    """Broadcast a scalar or ``(n,)`` value to an ``(n,)`` tensor with the dtype/device of x."""
    if isinstance(value, Tensor):
        t = value.detach().to(dtype=like.dtype, device=like.device).reshape(-1)
    else:  # build directly in x's dtype: a float32 detour would round e.g. 0.3 up by 1e-8
        t = torch.tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {tuple(t.shape)}")
    if not bool(torch.all(torch.isfinite(t))) or bool(torch.any(t < 0)):
        raise ValueError(f"{name} must be finite and non-negative")
    return t


def _norms(v: Tensor, p: float) -> Tensor:
    flat = v.reshape(v.shape[0], -1)
    return flat.abs().amax(dim=1) if p == math.inf else flat.norm(dim=1)


def _project(delta: Tensor, eps_b: Tensor, p: float) -> Tensor:
    r"""Euclidean projection of each :math:`\delta_i` onto :math:`\|\delta\|_p \le \varepsilon_i`.

    Clipping for :math:`p = \infty`, radial rescaling for :math:`p = 2`.
    """
    if p == math.inf:
        return torch.maximum(torch.minimum(delta, eps_b), -eps_b)
    tiny = torch.finfo(delta.dtype).tiny
    n = _norms(delta, p).clamp_min(tiny).reshape(eps_b.shape)
    return delta * torch.clamp(eps_b / n, max=1.0)


def _random_start(x: Tensor, eps_b: Tensor, p: float, gen: torch.Generator) -> Tensor:
    r"""Uniform sample from :math:`\{\|\delta\|_p \le \varepsilon_i\}` for every sample."""
    gen_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if p == math.inf:
        u = torch.rand(x.shape, generator=gen, dtype=gen_dtype, device=x.device)
        return (2 * u - 1).to(x.dtype) * eps_b
    # Uniform in the l2 ball: Gaussian direction, radius eps * U^(1/D).
    dim = x[0].numel()
    g = torch.randn(x.shape, generator=gen, dtype=gen_dtype, device=x.device)
    g = g / _norms(g, 2.0).clamp_min(torch.finfo(gen_dtype).tiny).reshape(-1, *[1] * (x.ndim - 1))
    r = torch.rand(x.shape[0], generator=gen, dtype=gen_dtype, device=x.device) ** (1.0 / dim)
    delta = (g * r.reshape(g.shape[0], *[1] * (x.ndim - 1))).to(x.dtype) * eps_b
    return _project(delta, eps_b, p)  # guards against round-off outside the ball


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: float | str,
    eps: float | Tensor,
    steps: int = 50,
    restarts: int = 1,
    step_size: float | None = None,
    clamp: tuple[float, float] | None = None,
    seed: int = 0,
    multi_targeted: bool = False,
) -> Tensor:
    r"""Untargeted PGD minimising the margin :math:`\mu(x + \delta, y)` over an :math:`\ell_p` ball.

    Each restart runs ``steps`` projected steps on the loss :math:`-\mu` (see the module
    docstring).  Restart 0 starts at :math:`\delta = 0`; restarts :math:`r \ge 1` start at
    uniform random points of the ball, drawn from a ``torch.Generator`` seeded with ``seed``
    (so the result is deterministic for a deterministic model).  Every iterate, including the
    start and the final one, is evaluated, and per sample the iterate with the lowest margin
    over all steps and restarts is returned; thus more restarts never give a larger margin than
    restart 0 alone.

    The untargeted margin loss is a maximum of several functions and PGD on it can stop in a
    local optimum even for a *linear* multi-class model (the gradient only ever sees the current
    runner-up class).  With ``multi_targeted=True`` and :math:`C > 2` classes every restart is
    instead run once per offset :math:`k = 1, \dots, C-1` on the targeted margin
    :math:`s_y - s_{(y+k) \bmod C}` (multi-targeted PGD, Gowal et al., "An Alternative Surrogate
    Loss for PGD-based Adversarial Testing", 2019), still keeping the iterate with the lowest
    full margin :math:`\mu`.  Since :math:`\min_\delta \mu = \min_k \min_\delta (s_y -
    s_k)`, this solves the attack problem exactly for linear models, at :math:`C - 1` times the
    cost.

    Args:
        model: maps ``(n, ...)`` inputs to ``(n, C)`` scores, or ``(n,)`` / ``(n, 1)`` single
            scores of a binary classifier.  Putting it in eval mode is the caller's job; its
            parameters' ``.grad`` are never touched (gradients are taken w.r.t. the input only).
        x: ``(n, ...)`` floating-point inputs (any dtype and device).  When ``clamp`` is given,
            ``x`` should lie in the box, otherwise ball and box may not intersect.
        y: ``(n,)`` labels.
        norm: ``2`` / ``"2"`` / ``"l2"`` or ``float("inf")`` / ``"inf"`` / ``"linf"``.
        eps: radius, a scalar or an ``(n,)`` tensor of finite non-negative per-sample radii
            (``eps = 0`` leaves that sample unchanged).
        steps: number of gradient steps per restart (``>= 0``).
        restarts: number of starts (``>= 1``).
        step_size: step length :math:`\eta` (same for every sample); defaults to
            ``2.5 * eps / steps`` per sample.
        clamp: optional ``(low, high)`` box (e.g. the pixel range) that iterates are clipped to
            after the ball projection; clipping towards a box that contains ``x`` cannot
            increase :math:`|\delta_i|` coordinate-wise, so the norm bound is kept.
        seed: seed of the generator used for the random starts.
        multi_targeted: run one targeted pass per wrong class (see above); ignored for binary
            models and :math:`C = 2`.

    Returns:
        Detached ``x_adv`` with the shape, dtype and device of ``x``, with
        :math:`\|x_{adv} - x\|_p \le \varepsilon` per sample (up to floating-point round-off in
        the subtraction) and inside ``clamp`` when given.

    Raises:
        ValueError: on an unsupported norm, a negative or non-finite radius, ``steps < 0``,
            ``restarts < 1``, non-floating ``x``, mismatched batch sizes or an empty box.
    """
    p = parse_norm(norm)
    if p not in (2.0, math.inf):
        raise InvalidInputError(f"pgd_attack supports the l2 and linf norms, got {norm!r}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got {steps} and {restarts}")
    n = x.shape[0]
    y = y.reshape(-1).to(x.device)
    if y.shape[0] != n:
        raise ValueError(f"x has {n} samples but y has {y.shape[0]}")
    if clamp is not None and not clamp[0] <= clamp[1]:
        raise ValueError(f"empty clamp box {clamp}")
    x = x.detach()
    if n == 0:
        return x.clone()

    bshape = (n,) + (1,) * (x.ndim - 1)
    eps_t = _per_sample(eps, n, x, "eps")
    eps_b = eps_t.reshape(bshape)
    if step_size is None:
        eta_b = (2.5 * eps_t / max(steps, 1)).reshape(bshape)
    else:
        eta_b = _per_sample(step_size, n, x, "step_size").reshape(bshape)
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)

    targets: list[Tensor | None] = [None]  # None: untargeted margin loss
    if multi_targeted:
        with torch.no_grad():
            scores0 = model(x)
        n_classes = scores0.shape[1] if scores0.ndim == 2 else 1
        if n_classes > 2:
            targets = [(y.long() + k) % n_classes for k in range(1, n_classes)]

    def evaluate(
        x_cur: Tensor, target: Tensor | None, need_grad: bool
    ) -> tuple[Tensor, Tensor | None]:
        x_var = x_cur.detach().requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            scores = model(x_var)
            mu = margin(scores, y)
            grad = None
            if need_grad:
                if target is None:
                    objective = mu
                else:
                    objective = scores.gather(1, y.long()[:, None]) - scores.gather(
                        1, target[:, None]
                    )
                # d(-objective)/dx; samples are independent, so this is per-sample.
                (grad,) = torch.autograd.grad(-objective.sum(), x_var)
        return mu.detach().reshape(-1), grad

    best_x = x.clone()
    best_mu = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    tiny = torch.finfo(x.dtype).tiny
    for r, target in itertools.product(range(restarts), targets):
        delta = torch.zeros_like(x) if r == 0 else _random_start(x, eps_b, p, gen)
        x_cur = x + delta
        if clamp is not None and r > 0:
            x_cur = x_cur.clamp(clamp[0], clamp[1])
        for t in range(steps + 1):
            mu, grad = evaluate(x_cur, target, need_grad=t < steps)
            better = mu < best_mu
            best_mu = torch.where(better, mu.to(best_mu.dtype), best_mu)
            best_x = torch.where(better.reshape(bshape), x_cur, best_x)
            if grad is None:
                break
            if p == math.inf:
                direction = grad.sign()
            else:
                direction = grad / _norms(grad, 2.0).clamp_min(tiny).reshape(bshape)
            delta = _project(x_cur - x + eta_b * direction, eps_b, p)
            x_cur = x + delta
            if clamp is not None:
                x_cur = x_cur.clamp(clamp[0], clamp[1])
    logger.debug(
        "pgd_attack: norm=%s, %d restart(s) x %d target pass(es) x %d step(s), "
        "%d/%d samples misclassified",
        p,
        restarts,
        len(targets),
        steps,
        int((best_mu < 0).sum()),
        n,
    )
    return best_x.detach()


def fgsm_attack(model: nn.Module, x: Tensor, y: Tensor, *, norm: float | str,
                eps: float | Tensor, clamp: tuple[float, float] | None = None) -> Tensor:
    """FGSM (Goodfellow, Shlens & Szegedy, ICLR 2015) on the margin loss: one step of length
    ``eps`` from ``x`` along the sign of the gradient (ℓ∞) or the normalised gradient (ℓ2) —
    :func:`pgd_attack` with one step of that length, from the clean point only."""
    return pgd_attack(model, x, y, norm=norm, eps=eps, steps=1, restarts=1, step_size=eps,
                      clamp=clamp)


def _import_autoattack() -> ModuleType:
    try:
        import pyautoattack
    except ImportError:
        raise SolverUnavailableError(
            "AutoAttack needs its authors' package pyautoattack: "
            "pip install 'convexrobust[attack]'") from None
    return pyautoattack


def check_clamp_box(clamp: object) -> tuple[float, float] | None:
    """``clamp`` as a ``(low, high)`` pair of floats (None stays None); anything else, and an
    empty or NaN box, raises :class:`InvalidInputError`."""
    if clamp is None:
        return None
    try:
        low, high = (float(c) for c in clamp)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InvalidInputError(f"clamp must be (low, high) or None, got {clamp!r}") from None
    if not low <= high:  # also NaN
        raise InvalidInputError(f"empty clamp box {(low, high)}")
    return low, high


def check_in_box(x: Tensor, clamp: tuple[float, float] | None) -> None:
    """:class:`InvalidInputError` when an entry of ``x`` lies outside the ``clamp`` box."""
    if clamp is not None and x.numel() and (float(x.min()) < clamp[0]
                                            or float(x.max()) > clamp[1]):
        raise InvalidInputError(
            f"inputs lie outside the clamp box {clamp} (range [{float(x.min()):g}, "
            f"{float(x.max()):g}]); pass clamp=None for unbounded inputs (e.g. features) or "
            "the data's valid range")


def _check_auto_attack_inputs(model: object, x: object, y: object, clamp: object
                              ) -> tuple[Tensor, Tensor, tuple[float, float] | None, int]:
    """What :func:`auto_attack` takes, checked before any work: ``model`` an ``nn.Module``,
    ``x`` a finite floating tensor ``(n, ...)`` inside a finite ``clamp`` box, ``y`` one class
    index per sample. Returns ``x`` (detached), ``y`` (long, on ``x``'s device), the box and
    the model's class count (2 for a single score), read off its scores on the first sample —
    ``(n, C)`` with ``C >= 2`` or single scores ``(n,)`` / ``(n, 1)`` — which ``y`` must fit
    (0 when ``x`` is empty). Raises :class:`InvalidInputError` (its ``TypeError`` kind for a
    model or ``x`` of the wrong type) naming the problem."""
    if not isinstance(model, nn.Module):
        raise InvalidInputTypeError(f"model must be a torch.nn.Module, got "
                                    f"{type(model).__name__}")
    if not isinstance(x, Tensor):
        raise InvalidInputTypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InvalidInputError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.ndim < 2:
        raise InvalidInputError(f"x must have shape (n, ...) with a sample axis first, got "
                                f"{tuple(x.shape)}; a single sample is x[None]")
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError("x holds NaN or infinite values")
    labels = class_indices(y, x.shape[0], what="y").to(x.device)
    box = check_clamp_box(clamp)
    if box is not None and not all(math.isfinite(b) for b in box):
        raise InvalidInputError(f"AutoAttack needs a finite clamp box, got {box}; pass "
                                "clamp=None for unbounded inputs")
    check_in_box(x, box)
    if x.shape[0] == 0:
        return x, labels, box, 0
    with torch.no_grad():
        scores = apply_model(model, x[:1])
    if not isinstance(scores, Tensor) or scores.ndim not in (1, 2) or scores.shape[0] != 1 \
            or (scores.ndim == 2 and scores.shape[1] == 0):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise InvalidInputError(f"the model must return (n, C) scores or (n,) single scores; "
                                f"on one sample it returned {shape}")
    n_classes = 2 if scores.ndim == 1 or scores.shape[1] == 1 else int(scores.shape[1])
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise InvalidInputError(f"y must hold class indices 0..{n_classes - 1} for a model "
                                f"with {n_classes} classes, got {int(labels.min())}.."
                                f"{int(labels.max())}")
    return x, labels, box, n_classes


def autoattack_version() -> str:
    """The installed ``pyautoattack`` version (to record beside AutoAttack numbers).

    Raises:
        SolverUnavailableError: ``pyautoattack`` is not installed; the message names
            ``pip install 'convexrobust[attack]'``.
    """
    return str(_import_autoattack().__version__)


class _UnitBox(nn.Module):
    r"""``model`` as AutoAttack takes it: images with pixels in :math:`[0, 1]` to logits.

    An input ``x`` of the box ``[low, low + scale]`` (on every coordinate) is encoded as
    :math:`u = (x - \mathrm{low}) / \mathrm{scale}`; one factor for all coordinates, so the
    :math:`\ell_p` ball of radius :math:`\varepsilon` is the ball of radius
    :math:`\varepsilon / \mathrm{scale}` in :math:`u`.  Inputs that are not ``(n, c, h, w)``
    images with sides of at least 5 pixels (Square's ℓ2 windows need five) are laid out as
    one-channel ``k × k`` images, padded with coordinates the model never sees.  A single binary
    score :math:`f` (class 1 iff :math:`f > 0`) becomes the two logits :math:`(-f, f)`, which
    predict the same class.
    """

    def __init__(self, model: nn.Module, x: Tensor, low: float, scale: float) -> None:
        super().__init__()
        self.model, self.low, self.scale = model, low, scale
        self.sample_shape, self.dtype, self.dim = x.shape[1:], x.dtype, x[0].numel()
        image = x.ndim == 4 and min(x.shape[2:]) >= 5
        self.side = None if image else max(5, math.isqrt(max(self.dim, 1) - 1) + 1)

    def encode(self, x: Tensor) -> Tensor:
        u = ((x - self.low) / self.scale).float()
        if self.side is None:
            return u
        flat = u.new_full((x.shape[0], self.side**2), 0.5)
        flat[:, : self.dim] = u.reshape(x.shape[0], -1)
        return flat.reshape(-1, 1, self.side, self.side)

    def decode(self, u: Tensor) -> Tensor:
        x = u.reshape(u.shape[0], -1)[:, : self.dim].reshape(-1, *self.sample_shape)
        return self.low + self.scale * x.to(self.dtype)

    def forward(self, u: Tensor) -> Tensor:
        scores = self.model(self.decode(u))
        if scores.ndim == 1 or scores.shape[1] == 1:
            f = scores.reshape(-1, 1)
            scores = torch.cat([-f, f], dim=1)
        return scores.float()


@contextlib.contextmanager
def _contained(model: nn.Module, device: torch.device) -> Iterator[bool]:
    """Undo what AutoAttack does to global state while it runs: it reseeds torch's global
    generator, replaces ``sys.settrace`` (its check for dynamic defences), logs to the
    ``auto-attack`` logger, and FAB backpropagates into the model's parameters.  Its log is
    shown only when this module logs at DEBUG; yields whether it does."""
    debug = logger.isEnabledFor(logging.DEBUG)
    aa_logger = logging.getLogger("auto-attack")
    level, disabled = aa_logger.level, aa_logger.disabled
    if debug:
        aa_logger.setLevel(logging.DEBUG)
    else:
        aa_logger.disabled = True
    tracer = sys.gettrace()
    trainable = [q for q in model.parameters() if q.requires_grad]
    try:
        for q in trainable:
            q.requires_grad_(False)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield debug
    finally:
        for q in trainable:
            q.requires_grad_(True)
        sys.settrace(tracer)
        aa_logger.setLevel(level)
        aa_logger.disabled = disabled


def auto_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: float | str,
    eps: float,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    seed: int = 0,
    version: str = "standard",
) -> Tensor:
    r"""AutoAttack (Croce & Hein, ICML 2020) of radius ``eps`` through the whole ``model``.

    ``version="standard"`` runs the published ensemble with its fixed hyperparameters
    (``pyautoattack``'s ``version="standard"``): APGD-CE, APGD-T on the targeted DLR loss, FAB-T
    and Square (5000 queries), each on the points the previous ones did not break.  Its
    targeted attacks aim at the 9 most likely wrong classes; a model with :math:`C < 10`
    classes has only :math:`C - 1`, and with :math:`C < 4` classes the targeted DLR loss is
    undefined, so APGD-T is left out (fra31/auto-attack#70) — binary models are attacked by
    APGD-CE, FAB-T and Square.  ``version="fast"`` runs APGD-CE alone (100 iterations, one
    restart): a cheap check for tests and CI whose numbers are not AutoAttack's.

    AutoAttack takes images in :math:`[0, 1]`: inputs in the ``clamp`` box are mapped there by
    one affine change of scale (so the ball keeps its shape); with ``clamp=None`` the box is
    one that holds every point's whole ball, so it never binds.  Non-image inputs are laid out
    as padded images, and a single binary score :math:`f` becomes the logits :math:`(-f, f)`.
    What AutoAttack returns is mapped back, projected onto the ball and clipped to ``clamp`` in
    ``x``'s dtype, so the result is always admissible; points it did not break come back
    unchanged.  Its randomness comes from ``seed`` (torch's global generator is left as it
    was), the model's parameters get no ``.grad``, and its log is shown at DEBUG level only.

    Args:
        model: maps ``(n, ...)`` inputs to ``(n, C)`` logits (:math:`C \ge 2`), or ``(n,)`` /
            ``(n, 1)`` single scores of a binary classifier; in eval mode (the caller's job),
            on ``x``'s device.
        x: ``(n, ...)`` floating-point inputs, inside ``clamp`` when it is given.
        y: ``(n,)`` labels (class indices).
        norm: ``2`` / ``"l2"`` or ``"inf"`` / ``"linf"``.
        eps: the radius, a finite number ``>= 0``.
        clamp: ``(low, high)`` box of valid inputs (default the pixel range), or ``None``.
        seed: AutoAttack's seed.
        version: one of :data:`AUTOATTACK_VERSIONS`.

    Returns:
        Detached ``x_adv`` with the shape, dtype and device of ``x``,
        :math:`\|x_{adv} - x\|_p \le \varepsilon` per sample (up to round-off in the addition).

    Raises:
        InvalidInputError: an ℓ1 or unknown norm, an unknown version, a bad radius; a model
            that is not an ``nn.Module``, cannot take ``x`` or does not return ``(n, C)`` or
            single scores; ``x`` that is not a finite floating tensor ``(n, ...)`` inside the
            box; ``y`` that is not one class index of the model per sample; a clamp box that
            is not a finite ``(low, high)`` pair with ``low <= high``. Checked before any work
            (:class:`~convexrobust.errors.InvalidInputTypeError` for a model or ``x`` of the
            wrong type).
        SolverUnavailableError: ``pyautoattack`` is not installed.
    """
    p = parse_norm(norm)
    if p not in (2.0, math.inf):
        raise InvalidInputError(f"auto_attack supports the l2 and linf norms, got {norm!r}")
    if version not in AUTOATTACK_VERSIONS:
        raise InvalidInputError(f"unknown AutoAttack version {version!r}; choose from "
                                f"{', '.join(AUTOATTACK_VERSIONS)}")
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise InvalidInputError(f"eps must be a number, got {eps!r}") from None
    if not math.isfinite(eps) or eps < 0:
        raise InvalidInputError(f"eps must be finite and >= 0, got {eps}")
    x, y, clamp, n_classes = _check_auto_attack_inputs(model, x, y, clamp)
    package = _import_autoattack()
    n = x.shape[0]
    if n == 0 or eps == 0 or (clamp is not None and clamp[0] == clamp[1]):
        return x.clone()
    low, high = clamp if clamp is not None else (float(x.min()) - eps, float(x.max()) + eps)

    head = _UnitBox(model, x, low, high - low)
    u = head.encode(x)
    aa_norm = "L2" if p == 2.0 else "Linf"
    with _contained(model, x.device) as verbose:
        if version == "standard":
            adversary = package.AutoAttack(head, norm=aa_norm, eps=eps / (high - low),
                                           seed=seed, device=x.device, version="standard")
            targets = min(9, n_classes - 1)
            adversary.apgd_targeted.n_target_classes = targets
            adversary.fab.n_target_classes = targets
            if n_classes < 4:
                adversary.attacks_to_run = [a for a in adversary.attacks_to_run if a != "apgd-t"]
        else:
            adversary = package.AutoAttack(head, attacks=["apgd-ce"], norm=aa_norm,
                                           eps=eps / (high - low), seed=seed, device=x.device,
                                           version="custom")
            adversary.apgd.n_restarts = 1
        adversary.verbose = verbose
        u_adv, _ = adversary.run_standard_evaluation(u, y, batch_size=n)

    moved = (u_adv != u).reshape(n, -1).any(dim=1).reshape((n,) + (1,) * (x.ndim - 1))
    eps_b = torch.full(moved.shape, eps, dtype=x.dtype, device=x.device)
    x_adv = x + _project(head.decode(u_adv.detach()) - x, eps_b, p)
    if clamp is not None:
        x_adv = x_adv.clamp(clamp[0], clamp[1])
    logger.debug("auto_attack (%s): norm=%s, eps=%g, %d classes, %d/%d samples moved",
                 version, aa_norm, eps, n_classes, int(moved.sum()), n)
    return torch.where(moved, x_adv, x).detach()
