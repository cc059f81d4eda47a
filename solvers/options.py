"""Validation of the options every first-order solver takes."""

from __future__ import annotations

import math

import numpy as np
import torch

from convexrobust.errors import InvalidInputError


def check_first_order_options(tol: object, max_iters: object, time_limit: object, seed: object,
                              dtype: object) -> None:
    """Raise :class:`InvalidInputError` unless ``0 < tol < 1``, ``max_iters`` is an integer
    ≥ 1, ``time_limit`` is None or > 0, ``seed`` is an integer and ``dtype`` a floating dtype."""
    if (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol)
            or not 0 < tol < 1):
        raise InvalidInputError(f"tol must be a number in (0, 1), got {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, (int, np.integer)) \
            or max_iters < 1:
        raise InvalidInputError(f"max_iters must be an integer >= 1, got {max_iters!r}")
    if time_limit is not None and (isinstance(time_limit, bool)
                                   or not isinstance(time_limit, (int, float))
                                   or not time_limit > 0):
        raise InvalidInputError(f"time_limit must be None or a number > 0, got {time_limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidInputError(f"dtype must be a torch floating dtype, got {dtype!r}")
