"""Pre-activation ResNet-18 for CIFAR-sized inputs, with a two-layer dense head.

The backbone follows He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks"
(ECCV 2016), in its CIFAR form:

    stem:    conv 3×3 (in_channels → w), no pooling
    stages:  4 × [2 pre-activation blocks], channels w, 2w, 4w, 8w, first strides 1, 2, 2, 2
             block: x ↦ conv(ReLU(BN(conv(ReLU(BN(x)))))) + shortcut
             shortcut: identity, or a 1×1 convolution (with the block's stride) applied to the
             pre-activated input ReLU(BN(x)) when the shape changes
    final:   BN, ReLU, global average pool, flatten          → features(x), dimension 8w

The head is the one whose last two layers Kuelbs et al. retrain with a convex program:

    fc1:     dense (8w → head_hidden), ReLU
    fc2:     dense (head_hidden → num_classes)               → logits

``features(x)`` is exactly the input of ``fc1``, so ``FeatureExtractor(model)`` and
``FeatureExtractor(model, "fc1")`` give the same features. No Lipschitz bound is known for this
network (batch norm and unconstrained convolutions), so features from it carry no certificate.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convexrobust._io import write_atomic
from convexrobust.errors import InvalidInputError


class PreActBlock(nn.Module):
    """A pre-activation basic block: two 3×3 convolutions, each preceded by BN and ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 (CIFAR variant) with a ``fc1 → ReLU → fc2`` head.

    Any input size at least 8×8 works (the global average pool removes the spatial dims).

    Parameters
    ----------
    num_classes:
        Number of logits.
    in_channels:
        Input image channels.
    width:
        Channels of the stem and first stage; the stages have ``width·(1, 2, 4, 8)`` channels
        and ``features(x)`` has dimension ``8·width`` (512 for the standard ``width=64``).
    head_hidden:
        Width of ``fc1``, the hidden layer of the two-layer head.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64,
                 head_hidden: int = 256):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels),
                            ("width", width), ("head_hidden", head_hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        self.config = {"num_classes": num_classes, "in_channels": in_channels, "width": width,
                       "head_hidden": head_hidden}
        self.stem = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        stages = []
        c_in = width
        for multiplier, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            c_out = width * multiplier
            stages.append(nn.Sequential(PreActBlock(c_in, c_out, stride),
                                        PreActBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(c_in)
        self.feature_dim = c_in
        self.fc1 = nn.Linear(c_in, head_hidden)
        self.fc2 = nn.Linear(head_hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The input of ``fc1``: shape (n, 8·width)."""
        if x.dim() != 4 or x.shape[1] != self.config["in_channels"]:
            raise InvalidInputError(
                f"expected images of shape (n, {self.config['in_channels']}, H, W), "
                f"got {tuple(x.shape)}")
        out = self.stem(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """The last two layers applied to features ``z``: ``fc2(ReLU(fc1(z)))``."""
        return self.fc2(F.relu(self.fc1(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def save(self, path: str | Path) -> None:
        """Architecture name, config and state dict, written atomically (temporary file, then
        rename); :func:`~convexrobust.networks.registry.network_to_dict`."""
        from convexrobust.networks.registry import network_to_dict

        payload = network_to_dict(self)
        write_atomic(path, lambda tmp: torch.save(payload, tmp))

    @classmethod
    def load(cls, path: str | Path,
             map_location: str | torch.device | None = "cpu") -> PreActResNet18:
        """A model saved by :meth:`save`, read from weights only; a missing file, another
        architecture or weights that do not fit raise InvalidInputError."""
        from convexrobust.networks.registry import load_network_file

        return load_network_file(path, map_location,  # type: ignore[return-value]
                                 expect="PreActResNet18")
