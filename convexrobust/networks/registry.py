"""The registry of architectures convexrobust defines: how a network is written as
``{"architecture", "config", "state_dict"}`` and rebuilt from it.

A registered class ``cls`` has a ``config`` dict attribute holding its constructor's keyword
arguments, so ``cls(**model.config)`` rebuilds the same architecture and
``load_state_dict`` restores the weights. Every loader of a network file — ``LiResNet.load``,
``PreActResNet18.load``, :meth:`~convexrobust.RobustModel.load` for its extractor and the
``convexrobust`` command — goes through this one table, so a checkpoint is always read the
same way, from weights only (nothing is unpickled).

Files written before the ``"architecture"`` key existed hold only ``config`` and
``state_dict``; their architecture is the registered class whose constructor parameters are
the config's keys (every key a parameter, every required parameter present; a LiResNet
config has ``depth``, which PreActResNet18 does not take). A loader that knows what it expects
(``LiResNet.load``) takes such a file as that architecture.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping

import torch
from torch import nn

from convexrobust._io import read_torch
from convexrobust.errors import InvalidInputError
from convexrobust.networks.liresnet import LiResNet
from convexrobust.networks.preact_resnet import PreActResNet18

__all__ = ["ARCHITECTURES", "architecture_name", "architecture_of", "build_network",
           "load_network_file", "network_from_dict", "network_to_dict"]

#: Architecture name → class: the networks that save and load from config + weights alone.
ARCHITECTURES: dict[str, type[nn.Module]] = {"LiResNet": LiResNet,
                                             "PreActResNet18": PreActResNet18}


def architecture_name(model: nn.Module) -> str | None:
    """The registered name of ``model``'s class (exact type, not a subclass), else None."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    return None


def network_to_dict(model: nn.Module) -> dict:
    """``{"architecture", "config", "state_dict"}`` of a registered network (what its
    ``save`` writes); :class:`InvalidInputError` for an unregistered one."""
    name = architecture_name(model)
    if name is None:
        raise InvalidInputError(
            f"{type(model).__name__} is not a registered architecture "
            f"({', '.join(ARCHITECTURES)}); save it with torch.save instead")
    return {"architecture": name, "config": dict(model.config),  # type: ignore[arg-type]
            "state_dict": model.state_dict()}


def _accepts(cls: type, keys: frozenset[str]) -> bool:
    """Whether ``cls(**config)`` takes a config with these keys: every key is a constructor
    parameter and every parameter without a default is among them."""
    params = {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
              if n != "self"}
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    return keys <= set(params) and required <= keys


def architecture_of(stored: Mapping) -> str:
    """The architecture name of a stored ``{"config", "state_dict"}`` dict: its
    ``"architecture"`` key, or for older files the unique registered class whose constructor
    takes exactly the config's keys (all of them, and all its required parameters)."""
    name = stored.get("architecture")
    if name is not None:
        if name not in ARCHITECTURES:
            raise InvalidInputError(f"unknown architecture {name!r}; registered: "
                                    f"{', '.join(ARCHITECTURES)}")
        return str(name)
    config = stored.get("config")
    if not isinstance(config, Mapping):
        raise InvalidInputError("the file has no architecture config: not a network file")
    keys = frozenset(config)
    matches = [n for n, cls in ARCHITECTURES.items() if _accepts(cls, keys)]
    if len(matches) != 1:
        raise InvalidInputError(
            f"cannot tell the architecture of a config with keys {sorted(keys)}; registered: "
            f"{', '.join(ARCHITECTURES)}")
    return matches[0]


def build_network(name: str, config: Mapping, state_dict: Mapping | None = None) -> nn.Module:
    """``ARCHITECTURES[name](**config)`` with ``state_dict`` loaded (strictly); a config or
    weights that do not fit the architecture raise :class:`InvalidInputError`."""
    if name not in ARCHITECTURES:
        raise InvalidInputError(f"unknown architecture {name!r}; registered: "
                                f"{', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[name]
    try:
        model = cls(**dict(config))
    except TypeError as err:
        raise InvalidInputError(f"the stored config does not fit {name}: {err}") from None
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except (RuntimeError, KeyError, TypeError) as err:
            raise InvalidInputError(f"the stored weights do not fit {name}{dict(config)}: "
                                    f"{str(err).splitlines()[0][:300]}") from None
    return model


def network_from_dict(stored: Mapping, *, expect: str | None = None) -> nn.Module:
    """The network of a dict written by :func:`network_to_dict` (or an older
    ``{"config", "state_dict"}``); with ``expect`` the architecture must be that one."""
    if not isinstance(stored, Mapping) or "state_dict" not in stored:
        raise InvalidInputError("not a network file: it needs 'config' and 'state_dict'")
    name = expect if expect is not None and "architecture" not in stored else \
        architecture_of(stored)
    if expect is not None and name != expect:
        raise InvalidInputError(f"the file holds a {name}, not a {expect}; load it with "
                                f"{name}.load")
    return build_network(name, stored["config"], stored["state_dict"])


def load_network_file(path: str | os.PathLike, map_location: str | torch.device | None = "cpu",
                      *, expect: str | None = None) -> nn.Module:
    """A registered network from a file its ``save`` wrote (weights only, nothing unpickled)."""
    stored = read_torch(path, what=expect or "network", map_location=map_location)
    if not isinstance(stored, Mapping):
        raise InvalidInputError(f"{path} holds a {type(stored).__name__}, not a network file")
    return network_from_dict(stored, expect=expect)
