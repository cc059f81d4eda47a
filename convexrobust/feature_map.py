"""The normalisation between a feature extractor and a convex head: ``z ↦ V(z − c)/s``.

:class:`FeatureNormalization` holds a centre ``c`` (the mean of the training features), one
scalar scale ``s`` (the root mean square of a centred coordinate, so the programs see features
of unit size) and a projection ``V`` with orthonormal rows (the top principal directions of the
centred, scaled training features, or the identity). It is an affine map with

    ‖V(z − c)/s − V(z' − c)/s‖₂ ≤ (‖V‖₂ / s) ‖z − z'‖₂,

so a guaranteed ℓ2 bound ``K_h`` of the extractor gives the guaranteed bound
``K_h ‖V‖₂ / s`` of the normalised feature map (:attr:`lipschitz_factor` is ``‖V‖₂ / s``, with
``‖V‖₂`` computed in float64: 1 up to round-off). Everything is float64.
"""

from __future__ import annotations

import torch
from torch import nn

from convexrobust._validation import check_positive
from convexrobust.errors import InvalidInputError

__all__ = ["FeatureNormalization", "principal_directions"]


def principal_directions(z: torch.Tensor, components: int | None) -> torch.Tensor:
    """The top ``components`` right singular vectors of ``z`` (already centred) as rows
    ``(k, D)``, or the identity when ``components`` is None or not smaller than ``D``."""
    dim = z.shape[1]
    if components is None:
        return torch.eye(dim, dtype=torch.float64)
    if isinstance(components, bool):
        raise InvalidInputError(f"components must be a positive integer, got {components!r}")
    k = int(check_positive(components, "components", allow_zero=False))
    if k != components:
        raise InvalidInputError(f"components must be a positive integer, got {components!r}")
    if k >= dim:
        return torch.eye(dim, dtype=torch.float64)
    return torch.linalg.svd(z, full_matrices=False)[2][:k].contiguous()


class FeatureNormalization(nn.Module):
    """``z ↦ V(z − c)/s`` in float64 (module docstring).

    Parameters
    ----------
    center:
        ``c``, shape (D,).
    scale:
        ``s > 0``.
    projection:
        ``V``, shape (k, D) with orthonormal rows; None for the identity.
    """

    def __init__(self, center: torch.Tensor, scale: float,
                 projection: torch.Tensor | None = None):
        super().__init__()
        center = torch.as_tensor(center, dtype=torch.float64).detach().clone()
        if center.dim() != 1:
            raise InvalidInputError(f"center must be a vector, got shape {tuple(center.shape)}")
        if projection is None:
            projection = torch.eye(center.shape[0], dtype=torch.float64)
        projection = torch.as_tensor(projection, dtype=torch.float64).detach().clone()
        if projection.dim() != 2 or projection.shape[1] != center.shape[0]:
            raise InvalidInputError(f"projection must have shape (k, {center.shape[0]}), got "
                                    f"{tuple(projection.shape)}")
        scale = float(scale)
        if not scale > 0 or scale == float("inf"):
            raise InvalidInputError(f"scale must be positive and finite, got {scale!r}")
        self.register_buffer("center", center)
        self.register_buffer("projection", projection)
        self.scale = scale
        self.projection_norm = float(torch.linalg.matrix_norm(projection.cpu(), 2))

    @classmethod
    def fit(cls, z: torch.Tensor, components: int | None = None) -> FeatureNormalization:
        """The normalisation of training features ``z`` (N, D): ``c`` their mean,
        ``s = sqrt(mean_i ‖z_i − c‖² / D)``, ``V`` the top ``components`` principal directions
        of ``(z − c)/s`` (:func:`principal_directions`). Constant features (``s = 0``) raise
        :class:`InvalidInputError`."""
        z = torch.as_tensor(z).to(torch.float64)
        if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
            raise InvalidInputError(f"features must have shape (N, D) with N, D >= 1, got "
                                    f"{tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise InvalidInputError("the training features contain NaN or inf")
        center = z.mean(dim=0)
        scale = float(torch.sqrt((z - center).square().sum(dim=1).mean() / z.shape[1]))
        if not scale > 0 or scale == float("inf"):
            raise InvalidInputError("the training features are constant (or overflow); "
                                    "nothing to learn from: check the data and the extractor")
        projection = principal_directions((z - center) / scale, components)
        return cls(center, scale, projection)

    @property
    def lipschitz_factor(self) -> float:
        """``‖V‖₂ / s``: the ℓ2 Lipschitz constant of the map."""
        return self.projection_norm / self.scale

    @property
    def components(self) -> int:
        """``k``, the output dimension."""
        return int(self.projection.shape[0])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``V(z − c)/s`` for rows ``z`` (N, D), in float64 on the map's device."""
        z = z.to(device=self.center.device, dtype=torch.float64)
        return (z - self.center) / self.scale @ self.projection.T

    def extra_repr(self) -> str:
        return (f"dim={self.center.shape[0]}, components={self.components}, "
                f"scale={self.scale:.4g}")
