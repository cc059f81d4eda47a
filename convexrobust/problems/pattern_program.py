"""What the programs over activation patterns share: the features with the constant column, the
patterns, and the per-sample tensors their torch renderings read.

The convex ReLU program (Pilanci & Ergen, ICML 2020, arXiv 2002.10553) and the gated ReLU
program (Mishkin, Sahiner & Pilanci, ICML 2022, arXiv 2202.01331) both act on
``X̃ = [X, 1]`` (``bias=True``; ``X̃ = X`` otherwise) through fixed patterns
``D_i = diag(1[X̃ g_i ≥ 0])`` of gates ``g_i`` (:mod:`convexrobust.problems.patterns`), and both
predict ``ŷ_c = Σ_i D_i X̃ z_{i,c}`` for some per-pattern weights ``z_{i,c}`` (MATH.md §1).
"""

from __future__ import annotations

import numpy as np
import torch

from convexrobust._validation import check_bool
from convexrobust.errors import InvalidInputError
from convexrobust.problems.base import ConvexProgram
from convexrobust.problems.losses import MARGIN_LOSSES
from convexrobust.problems.patterns import Patterns, sample_patterns

__all__ = ["PatternProgram"]


class PatternProgram(ConvexProgram):
    """Base class of the programs over activation patterns (module docstring). A subclass calls
    :meth:`_set_data`, then :meth:`_set_patterns`."""

    bias: bool
    Xb: np.ndarray
    patterns: Patterns

    def _set_patterns(self, bias: object, n_patterns: int, seed: int,
                      patterns: Patterns | None, *, margin: float = 0.0,
                      dual: float = 2.0) -> None:
        """Store ``bias``, ``X̃`` and the patterns: ``patterns`` when given (checked against
        this data), else up to ``n_patterns`` sampled with ``seed``, ``margin`` and ``dual``
        (:func:`~convexrobust.problems.patterns.sample_patterns`)."""
        self.bias = check_bool(bias, "bias")
        self.Xb = np.hstack([self.X, np.ones((self.n_samples, 1))]) if self.bias else self.X
        if patterns is None:
            patterns = sample_patterns(self.Xb, n_patterns, seed=seed, margin=margin, dual=dual,
                                       bias_column=self.bias)
        else:
            self._check_patterns(patterns)
        self.patterns = patterns
        self._torch_cache: dict[tuple, dict[str, torch.Tensor]] = {}

    def _check_patterns(self, patterns: object) -> None:
        """Given patterns must be :class:`Patterns` of this data: masks (n, P) of 0/1 and gates
        (d̃, P), d̃ counting the bias column, with P ≥ 1."""
        if not isinstance(patterns, Patterns):
            raise InvalidInputError(
                "patterns must be a Patterns from sample_patterns or enumerate_patterns, got "
                f"{type(patterns).__name__}"
            )
        masks, gates = np.asarray(patterns.masks), np.asarray(patterns.gates)
        if masks.ndim != 2 or masks.shape[0] != self.n_samples:
            raise InvalidInputError("patterns were computed on a data set of a different size")
        if masks.shape[1] < 1 or gates.shape != (self.Xb.shape[1], masks.shape[1]):
            raise InvalidInputError(
                f"patterns must hold at least one pattern and gates of shape "
                f"({self.Xb.shape[1]}, P) (features plus the bias column when bias=True), "
                f"got masks {masks.shape} and gates {gates.shape}"
            )
        if not np.all((masks == 0) | (masks == 1)):
            raise InvalidInputError("pattern masks must hold only 0 and 1")

    @property
    def n_patterns(self) -> int:
        return self.patterns.count

    @property
    def pairwise_margins(self) -> bool:
        """Multi-class margin losses use pairwise margins; everything else is per output."""
        return self.targets.task == "multiclass" and self.loss in MARGIN_LOSSES

    def sample_arrays(self) -> dict[str, np.ndarray]:
        """The per-sample data, one row per sample: ``Xb`` (features with the bias column),
        ``D`` (pattern masks), ``T`` (encoded targets) and, for classification, ``labels``.
        Any rows of these (e.g. one chunk of a data-parallel solver) go through
        :meth:`tensors_of` into the ``data`` argument of the torch renderings."""
        arrays = {"Xb": self.Xb, "D": self.patterns.masks, "T": self.targets.values}
        if self.targets.labels is not None:
            arrays["labels"] = self.targets.labels
        return arrays

    def tensors_of(self, arrays: dict[str, object], dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Rows of :meth:`sample_arrays` (numpy or torch) as the tensors the torch renderings
        take: the arrays in ``dtype`` on ``device`` plus ``others`` (``1[c ≠ y_k]`` for
        multi-class, all ones for binary)."""
        data = {key: torch.as_tensor(arrays[key], dtype=dtype, device=device)
                for key in ("Xb", "D", "T")}
        if "labels" in arrays:
            labels = torch.as_tensor(arrays["labels"], device=device)
            data["labels"] = labels
            rows = labels.shape[0]
            others = torch.ones(rows, self.n_outputs, dtype=dtype, device=device)
            if self.targets.task == "multiclass":
                others[torch.arange(rows, device=device), labels] = 0
            data["others"] = others
        return data

    def tensors(self, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The program's data as torch tensors (:meth:`tensors_of` of all samples, cached per
        dtype and device)."""
        key = (dtype, str(device))
        if key not in self._torch_cache:
            self._torch_cache[key] = self.tensors_of(self.sample_arrays(), dtype, device)
        return self._torch_cache[key]
