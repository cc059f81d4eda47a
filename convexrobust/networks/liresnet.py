"""LiResNet: a residual network whose Lipschitz bound is tight (Hu, Zou, Wang, Leino &
Fredrikson, "Unlocking Deterministic Robustness Certification on ImageNet", NeurIPS 2023).

Architecture (MATH.md §6), inputs in [0, 1]:

    stem:   conv 3×3 (in_channels → width), MinMax
    blocks: depth × [ x ↦ MinMax(conv(x; K_I + s·diag(γ)·V) + b) ],  s = depth^{-1/2}
            (the residual x + s·γ⊙conv_V(x) folded into one kernel: no nonlinearity inside the
            residual, so the block's Lipschitz constant is one convolution's operator norm)
    neck:   conv k×k stride k (width → neck_channels), MinMax, flatten  → features(x)
            dense (→ neck_dim), MinMax
    head:   last-layer-normalised dense (rows w_i/‖w_i‖₂) → logits

MinMax (GroupSort-2) maps channel halves (a, b) to (max(a, b), min(a, b)): a piecewise
permutation, so it is 1-Lipschitz and norm-preserving. The Lipschitz bound of a composition is
the product of the per-layer operator norms: ``K_features`` (stem, blocks, neck conv) and
``K_backbone = K_features · ‖neck dense‖`` (everything but the head, the K of the GloRo
certificate; the head enters through ``‖w_i − w_j‖``, MATH.md §5).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convexrobust._io import write_atomic
from convexrobust.errors import InvalidInputError
from convexrobust.lipschitz import (
    conv2d_norm_bound,
    conv2d_power_iteration,
    linear_norm_bound,
    linear_power_iteration,
)


def minmax(x: torch.Tensor) -> torch.Tensor:
    """GroupSort-2 over channel halves: ``[max(a, b), min(a, b)]``."""
    a, b = x.chunk(2, dim=1)
    return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class _Conv(nn.Module):
    """A convolution that knows its input size and keeps a warm-started power-iteration
    vector (the training surrogate of its operator norm)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 input_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        nn.init.orthogonal_(self.weight.view(c_out, -1))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.stride, self.padding, self.input_size = stride, padding, input_size
        self.register_buffer("u", torch.randn(1, c_in, input_size, input_size))

    def kernel(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), self.bias, stride=self.stride, padding=self.padding)

    def output_size(self) -> int:
        k = self.weight.shape[-1]
        return (self.input_size + 2 * self.padding - k) // self.stride + 1

    def norm_estimate(self, steps: int = 1) -> torch.Tensor:
        sigma, u = conv2d_power_iteration(self.kernel(), self.u.to(self.weight.dtype),
                                          steps=steps, stride=self.stride,
                                          padding=self.padding)
        if self.training:
            self.u.copy_(u)
        return sigma

    def norm_bound(self) -> float:
        return conv2d_norm_bound(self.kernel(), self.input_size, stride=self.stride,
                                 padding=self.padding)


class LinearResidualConv(_Conv):
    """``conv(x; K_I + s·diag(γ)·V)``: identity kernel plus a scaled residual kernel."""

    def __init__(self, width: int, input_size: int, depth: int):
        super().__init__(width, width, 3, 1, 1, input_size)
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(9 * width))
        self.gamma = nn.Parameter(torch.ones(width))
        self.scale = depth ** -0.5
        identity = torch.zeros(width, width, 3, 3)
        identity[torch.arange(width), torch.arange(width), 1, 1] = 1.0
        self.register_buffer("identity", identity)

    def kernel(self) -> torch.Tensor:
        return self.identity + self.scale * self.gamma[:, None, None, None] * self.weight


class _Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        nn.init.orthogonal_(self.weight)
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.register_buffer("u", torch.randn(d_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def norm_estimate(self, steps: int = 1) -> torch.Tensor:
        sigma, u = linear_power_iteration(self.weight, self.u.to(self.weight.dtype), steps=steps)
        if self.training:
            self.u.copy_(u)
        return sigma

    def norm_bound(self) -> float:
        return linear_norm_bound(self.weight)


def parse_arch(arch: str) -> tuple[int, int]:
    """``"L6W64"`` → (depth 6, width 64)."""
    import re

    match = re.fullmatch(r"L(\d+)W(\d+)", arch.strip().upper())
    if not match:
        raise InvalidInputError(f"architecture names look like 'L6W64', got {arch!r}")
    return int(match.group(1)), int(match.group(2))


class LiResNet(nn.Module):
    """A Lipschitz-bounded residual network (see the module docstring).

    Parameters
    ----------
    depth, width:
        Number of linear residual blocks and their channels (even: MinMax pairs channels).
    num_classes, in_channels, input_size:
        Output classes and the (square) input shape.
    neck_stride:
        Kernel size and stride of the neck convolution (spatial downsampling).
    neck_channels:
        Output channels of the neck convolution; ``features(x)`` has dimension
        ``neck_channels · (input_size / neck_stride)²`` (keep it ≤ 512 for polynomial heads).
    neck_dim:
        Width of the neck's dense layer (the first of the last two layers).
    """

    def __init__(self, depth: int, width: int, num_classes: int, *, in_channels: int = 3,
                 input_size: int = 32, neck_stride: int = 4, neck_channels: int | None = None,
                 neck_dim: int = 256):
        super().__init__()
        if width % 2 or width < 2 or depth < 1:
            raise InvalidInputError("width must be even and >= 2, depth >= 1")
        if input_size % neck_stride:
            raise InvalidInputError("input_size must be a multiple of neck_stride")
        spatial = input_size // neck_stride
        if neck_channels is None:
            neck_channels = max(2, 2 * ((512 // (spatial * spatial)) // 2))
        if neck_channels % 2 or neck_dim % 2:
            raise InvalidInputError("neck_channels and neck_dim must be even (MinMax pairs)")
        self.config = {"depth": depth, "width": width, "num_classes": num_classes,
                       "in_channels": in_channels, "input_size": input_size,
                       "neck_stride": neck_stride, "neck_channels": neck_channels,
                       "neck_dim": neck_dim}
        self.stem = _Conv(in_channels, width, 3, 1, 1, input_size)
        self.blocks = nn.ModuleList(LinearResidualConv(width, input_size, depth)
                                    for _ in range(depth))
        self.neck_conv = _Conv(width, neck_channels, neck_stride, neck_stride, 0, input_size)
        self.feature_dim = neck_channels * spatial * spatial
        self.neck_dense = _Dense(self.feature_dim, neck_dim)
        self.head = nn.Linear(neck_dim, num_classes)

    def save(self, path: str | Path) -> None:
        """Architecture name, config and state dict, written atomically (temporary file, then
        rename); :func:`~convexrobust.networks.registry.network_to_dict`."""
        from convexrobust.networks.registry import network_to_dict

        payload = network_to_dict(self)
        write_atomic(path, lambda tmp: torch.save(payload, tmp))

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device | None = "cpu") -> LiResNet:
        """A model saved by :meth:`save` (or by the trainer), read from weights only; a missing
        file, another architecture or weights that do not fit raise InvalidInputError."""
        from convexrobust.networks.registry import load_network_file

        return load_network_file(path, map_location, expect="LiResNet")  # type: ignore[return-value]

    @classmethod
    def from_arch(cls, arch: str, num_classes: int, **kwargs: object) -> LiResNet:
        depth, width = parse_arch(arch)
        return cls(depth, width, num_classes, **kwargs)  # type: ignore[arg-type]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the last two layers (neck dense, head): shape (n, feature_dim)."""
        x = minmax(self.stem(x))
        for block in self.blocks:
            x = minmax(block(x))
        return minmax(self.neck_conv(x)).flatten(1)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return minmax(self.neck_dense(self.features(x)))

    def head_weight(self) -> torch.Tensor:
        """Last-layer-normalised head rows ``w_i / ‖w_i‖₂``."""
        return F.normalize(self.head.weight, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.penultimate(x), self.head_weight(), self.head.bias)

    def _layers(self, part: str) -> list[nn.Module]:
        layers = [self.stem, *self.blocks, self.neck_conv]
        if part == "backbone":
            layers.append(self.neck_dense)
        elif part != "features":
            raise InvalidInputError("part must be 'backbone' or 'features'")
        return layers

    def block_norm_estimates(self, steps: int = 1) -> torch.Tensor:
        """Power iteration on every residual block at once: the L block kernels form one
        grouped convolution (groups = L) acting on the stacked iterates, and each group is
        normalised separately. Returns the L estimates (differentiable in the kernels)."""
        depth, width = len(self.blocks), self.config["width"]
        kernels = torch.cat([block.kernel() for block in self.blocks])  # (L·W, W, 3, 3)
        u = torch.cat([block.u for block in self.blocks], dim=1).to(kernels.dtype)

        def grouped_norms(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(depth, -1).norm(dim=1)

        with torch.no_grad():
            for _ in range(steps):
                v = F.conv2d(u, kernels, padding=1, groups=depth)
                u = F.conv_transpose2d(v, kernels, padding=1, groups=depth)
                scale = grouped_norms(u).clamp_min(torch.finfo(u.dtype).tiny)
                u = (u.reshape(depth, -1) / scale[:, None]).reshape(u.shape)
        if self.training:
            for block, part in zip(self.blocks, u.split(width, dim=1), strict=True):
                block.u.copy_(part)
        return grouped_norms(F.conv2d(u.detach(), kernels, padding=1, groups=depth))

    def lipschitz_estimate(self, part: str = "backbone", steps: int = 1) -> torch.Tensor:
        """Differentiable power-iteration surrogate (an under-estimate: training only); the
        residual blocks are iterated together as one grouped convolution."""
        est = self.block_norm_estimates(steps).prod()
        for layer in self._layers(part):
            if not isinstance(layer, LinearResidualConv):
                est = est * layer.norm_estimate(steps)
        return est

    @torch.no_grad()
    def lipschitz_bound(self, kind: str = "guaranteed", part: str = "backbone") -> float:
        """``kind="guaranteed"``: product of float64 per-layer upper bounds (certificates);
        ``"estimate"``: the power-iteration value, checked never to exceed the guaranteed one."""
        if kind not in ("guaranteed", "estimate"):
            raise InvalidInputError("kind must be 'guaranteed' or 'estimate'")
        bound = 1.0
        for layer in self._layers(part):
            bound *= layer.norm_bound()
        if kind == "guaranteed":
            return bound
        estimate = float(self.lipschitz_estimate(part, steps=50))
        if estimate > bound * (1 + 1e-6):  # power iteration approaches the norm from below
            raise RuntimeError(f"power-iteration estimate {estimate:.6g} exceeds the guaranteed "
                               f"bound {bound:.6g}: a bound is wrong, do not certify")
        return estimate

    @torch.no_grad()
    def certified_radius(self, x: torch.Tensor, y: torch.Tensor, norm: float | str = 2, *,
                         batch_size: int = 512) -> torch.Tensor:
        """Per-point GloRo certificate of the whole network in input space (MATH.md §5, linear
        head): the largest ``r`` with ``f_y − f_i > r·K‖w_y − w_i‖`` for all ``i ≠ y``, ``K`` the
        guaranteed backbone bound; 0 where misclassified. Computed on a float64 copy; for ℓ∞
        the ℓ2 radius is divided by ``√D`` (``D`` input coordinates). float64 on the CPU."""
        from convexrobust.lipschitz_margin import gloro_radius
        from convexrobust.threat import parse_norm

        p = parse_norm(norm)
        exact = copy.deepcopy(self).double().eval()
        K = exact.lipschitz_bound("guaranteed", "backbone")
        W = exact.head_weight()
        device = W.device
        labels = torch.as_tensor(y).reshape(-1).long()
        if labels.shape[0] != x.shape[0]:
            raise InvalidInputError(f"x has {x.shape[0]} samples but y has {labels.shape[0]}")
        radii = []
        for start in range(0, x.shape[0], batch_size):
            logits = exact(x[start:start + batch_size].to(device, torch.float64))
            yb = labels[start:start + batch_size].to(device)
            radius = gloro_radius(logits, yb, W, K)
            radii.append(torch.where(logits.argmax(1) == yb, radius,
                                     torch.zeros_like(radius)).cpu())
        out = torch.cat(radii)
        if p == math.inf:
            out = out / math.sqrt(x[0].numel())
        elif p != 2.0:
            raise InvalidInputError("LiResNet certificates are l2 (or linf through sqrt(D))")
        return out
