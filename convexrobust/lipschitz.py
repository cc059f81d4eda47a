"""Operator norms of linear layers: guaranteed upper bounds (for certificates) and power
iteration (the differentiable training surrogate). MATH.md §6.

Guaranteed bounds, computed in float64:

* Dense layer ``W``: the largest singular value from an SVD, times ``1 + 1e-10`` to cover
  round-off.
* 2-D convolution with zero padding ``p`` and stride ``s`` on an ``H×W`` input: the zero-padded
  convolution is a restriction of the *circular* convolution on the padded domain
  ``N₁ × N₂ = (H + 2p_h) × (W + 2p_w)`` (no output of the padded convolution wraps around), and
  a stride only subsamples the output, so ``‖conv‖ ≤ ‖circular conv‖``. The circular
  convolution is block-diagonalised by the 2-D DFT (Sedghi, Gupta & Long, ICLR 2019):
  ``‖circular conv‖ = max_{u,v} σ_max(K̂(u, v))`` with ``K̂(u, v) = Σ_{p,q} K[:, :, p, q]
  e^{2πi(pu/N₁ + qv/N₂)}`` — one small SVD per frequency (half of them, by conjugate symmetry).

Power iteration ``u ← AᵀAu / ‖AᵀAu‖`` converges **from below**: its value under-estimates the
norm and would over-certify, so it is only ever a training surrogate, never a certificate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convexrobust.errors import InvalidInputError

#: Relative safety factor on floating-point SVDs (float64 singular values are accurate to a few
#: ulps of σ_max; this is orders of magnitude more).
SAFETY = 1e-10


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def linear_norm_bound(weight: torch.Tensor) -> float:
    """Guaranteed upper bound of ``‖W‖₂`` for a dense layer ``x ↦ Wx`` (exact SVD, float64)."""
    if weight.ndim != 2:
        raise InvalidInputError(f"a dense weight must be 2-D, got shape {tuple(weight.shape)}")
    sigma = torch.linalg.matrix_norm(weight.detach().to(torch.float64), ord=2)
    return float(sigma) * (1.0 + SAFETY)


def conv2d_norm_bound(weight: torch.Tensor, input_size: int | tuple[int, int], *,
                      stride: int | tuple[int, int] = 1,
                      padding: int | tuple[int, int] = 0) -> float:
    """Guaranteed upper bound of the ℓ2 operator norm of ``F.conv2d(·, weight, stride=stride,
    padding=padding)`` on inputs of spatial size ``input_size`` (see the module docstring).

    ``stride`` does not enter the bound (subsampling never increases the norm), except for
    non-overlapping patches (kernel = stride, no padding), where the norm is computed exactly.
    """
    if weight.ndim != 4:
        raise InvalidInputError(f"a conv2d weight must be 4-D, got shape {tuple(weight.shape)}")
    (H, W), (ph, pw), (sh, sw) = _pair(input_size), _pair(padding), _pair(stride)
    kh, kw = weight.shape[-2:]
    if (sh, sw) == (kh, kw) and ph == pw == 0 and H % kh == 0 and W % kw == 0:
        # non-overlapping patches ("patchify"): the operator is block diagonal with one
        # identical block, the kernel as a (C_out, C_in·k·k) matrix — its norm is exact
        return linear_norm_bound(weight.reshape(weight.shape[0], -1))
    n1, n2 = H + 2 * ph, W + 2 * pw
    if n1 < kh or n2 < kw:
        raise InvalidInputError(
            f"kernel {kh}×{kw} is larger than the padded input {n1}×{n2}: no output exists"
        )
    spectrum = torch.fft.rfft2(weight.detach().to(torch.float64), s=(n1, n2))  # (o, i, n1, m)
    per_frequency = torch.linalg.matrix_norm(spectrum.permute(2, 3, 0, 1), ord=2)
    return float(per_frequency.max()) * (1.0 + SAFETY)


def conv2d_power_iteration(weight: torch.Tensor, u: torch.Tensor, *, steps: int = 1,
                           stride: int | tuple[int, int] = 1,
                           padding: int | tuple[int, int] = 0
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` power-iteration steps on ``AᵀA`` for ``A = conv2d(·, weight)``, from the
    iterate ``u`` (shape (1, C_in, H, W)); returns ``(‖A u‖, u_next)``.

    The estimate is differentiable in ``weight`` (the iterate is detached, as a persistent,
    warm-started buffer would be) and never exceeds the true norm.
    """
    stride, padding = _pair(stride), _pair(padding)
    u = u.detach()
    with torch.no_grad():
        for _ in range(steps):
            v = F.conv2d(u, weight, stride=stride, padding=padding)
            out_pad = [u.shape[-2 + i] - ((v.shape[-2 + i] - 1) * stride[i] - 2 * padding[i]
                                          + weight.shape[-2 + i]) for i in range(2)]
            u = F.conv_transpose2d(v, weight, stride=stride, padding=padding,
                                   output_padding=tuple(out_pad))
            u = u / u.norm().clamp_min(torch.finfo(u.dtype).tiny)
    sigma = F.conv2d(u, weight, stride=stride, padding=padding).norm()
    return sigma, u


def linear_power_iteration(weight: torch.Tensor, u: torch.Tensor, *, steps: int = 1
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Power iteration for a dense layer; ``u`` has shape (in_features,)."""
    u = u.detach()
    with torch.no_grad():
        for _ in range(steps):
            u = weight.T @ (weight @ u)
            u = u / u.norm().clamp_min(torch.finfo(u.dtype).tiny)
    return (weight @ u).norm(), u
