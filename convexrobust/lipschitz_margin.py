"""Training losses and the certificate of a Lipschitz backbone with a linear head
(MATH.md §5, §7).

Notation: logits ``f = W h(x) + b`` with head rows ``w_i``, label ``y``, a Lipschitz bound
``K`` of the backbone ``h`` (ℓ2), radius ε, and ``M_i = K ‖w_y − w_i‖₂``.

* GloRo certificate (Leino, Wang & Fredrikson, ICML 2021): ``x`` is certified at ε iff
  ``f_y − f_i > ε M_i`` for every ``i ≠ y`` — strictly; a tie is not certified. The certified
  radius is ``min_{i≠y} (f_y − f_i) / M_i`` (0 when misclassified).
* EMMA (Hu et al., NeurIPS 2023): with ``z_i = f_i − f_y`` and
  ``ρ_i = stopgrad(clip(−z_i / (ε M_i), 0.01, 1))`` (denominator floored at 1e-8), the logits
  ``ỹ_i = z_i + ρ_i ε M_i`` (``ỹ_y = 0``) go into the cross-entropy: every competitor is pushed
  by its own current certified radius, clipped to ``[0.01 ε, ε]``.
* Fixed-margin loss: EMMA with every ``ρ_i = 1``.
* GloRo-TRADES: cross-entropy plus a KL term against the logits extended by the bottom class
  ``f_⊥ = max_{i≠j} (f_i + ε M_i)`` of the prediction ``j`` (the alternative to EMMA).
* ε schedule: ``ε_t = ε (m + (M − m) min(2t/T, 1))`` with ``m = 0.1`` and ``M`` = 1.5
  (NeurIPS code) or 3.0 (ICLR code: Hu, Zhang, Zhou, Wang & Fredrikson, "Unlocking Deep
  Lipschitz Networks with Certified Robustness", ICLR 2024, arXiv 2310.02513).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_lipschitz(head_weight: torch.Tensor, y: torch.Tensor, K: torch.Tensor | float
                       ) -> torch.Tensor:
    """``M_i = K ‖w_y − w_i‖₂`` for every sample and class, shape (n, C) (0 at ``i = y``)."""
    diff = head_weight[y].unsqueeze(1) - head_weight.unsqueeze(0)  # (n, C, d)
    return K * diff.norm(dim=-1)


def _shifted_logits(logits: torch.Tensor, y: torch.Tensor, head_weight: torch.Tensor,
                    K: torch.Tensor | float, eps: float, ratio: torch.Tensor | None
                    ) -> torch.Tensor:
    z = logits - logits.gather(1, y[:, None])
    M = pairwise_lipschitz(head_weight, y, K)
    if ratio is None:
        ratio = (-z / (eps * M).clamp_min(1e-8)).clamp(0.01, 1.0).detach()
    shifted = z + ratio * eps * M
    return shifted.scatter(1, y[:, None], 0.0)


def emma_loss(logits: torch.Tensor, y: torch.Tensor, head_weight: torch.Tensor,
              K: torch.Tensor | float, eps: float) -> torch.Tensor:
    """EMMA: cross-entropy of the adaptively margin-shifted logits (mean over the batch)."""
    if eps == 0:
        return F.cross_entropy(logits, y)
    return F.cross_entropy(_shifted_logits(logits, y, head_weight, K, eps, None), y)


def fixed_margin_loss(logits: torch.Tensor, y: torch.Tensor, head_weight: torch.Tensor,
                      K: torch.Tensor | float, eps: float) -> torch.Tensor:
    """Cross-entropy with every competitor shifted by its full margin ``ε M_i``."""
    ones = torch.ones_like(logits)
    return F.cross_entropy(_shifted_logits(logits, y, head_weight, K, eps, ones), y)


def gloro_trades_loss(logits: torch.Tensor, y: torch.Tensor, head_weight: torch.Tensor,
                      K: torch.Tensor | float, eps: float, trades: float = 1.0) -> torch.Tensor:
    """GloRo-TRADES (Leino et al. 2021): ``CE(f, y) + λ·KL(p ‖ q)`` with ``p = softmax(f)``
    (no mass on ⊥) and ``q = softmax([f, f_⊥])``, where the bottom logit
    ``f_⊥ = max_{i≠j} (f_i + ε K ‖w_j − w_i‖)`` uses only the prediction ``j = argmax f`` and
    its worst competitor."""
    pred = logits.argmax(1).detach()
    M = pairwise_lipschitz(head_weight, pred, K)
    bottom = (logits + eps * M).scatter(1, pred[:, None], float("-inf")).amax(1, keepdim=True)
    log_p = F.log_softmax(logits, dim=1)
    log_q = F.log_softmax(torch.cat([logits, bottom], dim=1), dim=1)[:, :-1]
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    return F.cross_entropy(logits, y) + trades * kl


def gloro_radius(logits: torch.Tensor, y: torch.Tensor, head_weight: torch.Tensor,
                 K: float) -> torch.Tensor:
    """Certified ℓ2 radius of each sample (0 when misclassified or tied): the least
    ``(f_y − f_i) / (K‖w_y − w_i‖)`` over ``i ≠ y`` (MATH.md §5, linear head). A class with the
    same head row (``‖w_y − w_i‖ = 0``) never changes its margin: it allows every radius when
    ``f_y > f_i`` and none when tied or ahead."""
    z = logits.gather(1, y[:, None]) - logits  # f_y − f_i
    M = pairwise_lipschitz(head_weight, y, K)
    constant = torch.where(z > 0, torch.inf, 0.0).to(z.dtype)
    radius = torch.where(M > 0, z / M.clamp_min(torch.finfo(M.dtype).tiny), constant)
    radius = radius.scatter(1, y[:, None], torch.inf).amin(dim=1)
    return radius.clamp_min(0.0)


def gloro_certified(logits: torch.Tensor, y: torch.Tensor, head_weight: torch.Tensor,
                    K: float, eps: float) -> torch.Tensor:
    """``f_y − f_i > ε K ‖w_y − w_i‖`` for all ``i ≠ y`` (strict: ties are not certified)."""
    z = logits.gather(1, y[:, None]) - logits
    M = pairwise_lipschitz(head_weight, y, K)
    ok = (z > eps * M).scatter(1, y[:, None], True)
    return ok.all(dim=1)


def epsilon_schedule(eps: float, step: int, total: int, *, low: float = 0.1,
                     high: float = 1.5) -> float:
    """``ε_t = ε (m + (M − m) min(2t/T, 1))``."""
    return eps * (low + (high - low) * min(2.0 * step / max(total, 1), 1.0))
