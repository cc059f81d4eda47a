"""The registry of architectures convexrobust defines: how a network is written as
``{"architecture", "config", "state_dict"}`` and rebuilt from it; and :func:`load_network`,
which reads any network file the library accepts.

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

Networks of other architectures come in as a TorchScript archive
(:class:`TorchScriptNetwork`), as the ``state_dict`` of a class named
``package.module:Class`` (:func:`import_model_class`), or — from trusted files only — as a
whole pickled ``nn.Module``; :func:`load_network` documents the order it tries them in.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from convexrobust._io import read_torch
from convexrobust.errors import InvalidInputError
from convexrobust.networks.liresnet import LiResNet
from convexrobust.networks.preact_resnet import PreActResNet18

__all__ = ["ARCHITECTURES", "TorchScriptNetwork", "architecture_name", "architecture_of",
           "build_network", "import_model_class", "load_network", "load_network_file",
           "load_torchscript", "network_from_dict", "network_from_state_dict",
           "network_to_dict", "torchscript_bytes"]

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


def torchscript_bytes(script: torch.jit.ScriptModule) -> bytes:
    """The archive ``torch.jit.save`` writes for ``script``."""
    archive = io.BytesIO()
    torch.jit.save(script, archive)
    return archive.getvalue()


def load_torchscript(source: str | Path | bytes) -> torch.jit.ScriptModule:
    """``torch.jit.load`` of a file or of archive bytes, on the CPU (torch's deprecation
    warning for ``torch.jit`` silenced: it is noise to our users); raises what
    ``torch.jit.load`` raises."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        return torch.jit.load(io.BytesIO(source) if isinstance(source, bytes) else source,
                              map_location="cpu")


class TorchScriptNetwork(nn.Module):
    """A TorchScript network (``torch.jit.save``) as an ordinary module.

    ``forward`` runs the script's ``forward`` and :meth:`features` its ``features`` method
    (exported with ``@torch.jit.export`` before scripting). A RobustModel built on it stores
    the TorchScript archive (``torch.jit.save`` bytes) and reloads without unpickling. Its
    layers run compiled code that forward hooks cannot see, so the feature map is
    ``features(x)``, never a layer named by ``feature_module``.

    Attributes
    ----------
    script:
        The loaded ``torch.jit.ScriptModule``.
    """

    def __init__(self, script: torch.jit.ScriptModule):
        super().__init__()
        self.script = script

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.script(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The script's exported ``features(x)``; :class:`InvalidInputError` when it has none."""
        if not hasattr(self.script, "features"):
            raise InvalidInputError(
                "the TorchScript network has no features(x) method, and its compiled layers "
                "cannot be hooked by name: define features(x) (the input of the last two "
                "layers), mark it @torch.jit.export and script the model again, or load the "
                "Python class with model_class (--model-class)")
        return self.script.features(x)

    def __getstate__(self) -> dict:
        modules = {k: v for k, v in self._modules.items() if k != "script"}
        return {**self.__dict__, "_modules": modules,
                "torchscript": torchscript_bytes(self.script)}

    def __setstate__(self, state: dict) -> None:
        archive = state.pop("torchscript")
        super().__setstate__(state)
        self.script = load_torchscript(archive)


def import_model_class(spec: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass named ``"package.module:Class"`` (imported);
    :class:`InvalidInputError` when the name is malformed, the module cannot be imported, it
    has no such attribute, or the attribute is not an ``nn.Module`` subclass."""
    module_name, colon, attr = str(spec).partition(":")
    if not colon or not module_name or not attr:
        raise InvalidInputError(f"model class {spec!r} is not of the form package.module:Class "
                                f"(e.g. torchvision.models.resnet:ResNet)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InvalidInputError(f"cannot import module {module_name!r} of model class {spec!r} "
                                f"({err}): install it, or put its folder on PYTHONPATH") from None
    if not hasattr(module, attr):
        classes = sorted(n for n, v in vars(module).items()
                         if isinstance(v, type) and issubclass(v, nn.Module))
        raise InvalidInputError(f"module {module_name!r} has no attribute {attr!r}; its "
                                f"nn.Module classes: {', '.join(classes) or 'none'}")
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise InvalidInputError(f"{spec} is a {type(cls).__name__}, not a torch.nn.Module "
                                f"subclass: name the class whose state_dict the file holds")
    return cls


def _model_kwargs(kwargs: Mapping | str | None) -> dict:
    """Constructor keyword arguments from a mapping or its JSON text (None: none)."""
    if kwargs is None:
        return {}
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as err:
            raise InvalidInputError(f"model kwargs {kwargs!r} are not JSON ({err}): write a "
                                    f"JSON object such as '{{\"num_classes\": 10}}'") from None
    if not isinstance(kwargs, Mapping):
        raise InvalidInputError(f"model kwargs must be a JSON object such as "
                                f"'{{\"num_classes\": 10}}', got a {type(kwargs).__name__}")
    return dict(kwargs)


def _some(keys: list[str]) -> str:
    """At most five of ``keys`` (and how many there are when that is more)."""
    if not keys:
        return "none"
    return ", ".join(keys[:5]) + (f", … ({len(keys)} in all)" if len(keys) > 5 else "")


def network_from_state_dict(spec: str, state_dict: Mapping,
                            kwargs: Mapping | str | None = None) -> nn.Module:
    """``cls(**kwargs)`` for the class ``spec`` (``"package.module:Class"``,
    :func:`import_model_class`) with ``state_dict`` loaded strictly; ``kwargs`` is a mapping or
    its JSON text. A constructor that rejects the kwargs, or weights whose keys or shapes do
    not fit (the message lists the missing and unexpected keys), raise
    :class:`InvalidInputError`."""
    cls, kwargs = import_model_class(spec), _model_kwargs(kwargs)
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{spec}(**{kwargs}) failed ({err}): pass the constructor's "
                                f"arguments as model kwargs (--model-kwargs)") from None
    expected, given = set(model.state_dict()), {str(k) for k in state_dict}
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise InvalidInputError(f"the state_dict does not fit {spec}(**{kwargs}): missing keys: "
                                f"{_some(missing)}; unexpected keys: {_some(unexpected)}; check "
                                f"the class and its kwargs (--model-kwargs)")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise InvalidInputError(f"the state_dict does not fit {spec}(**{kwargs}): "
                                f"{' '.join(str(err).split())[:300]}") from None
    return model


def _state_dict_in(stored: object) -> Mapping | None:
    """The state dict a file holds — a mapping of names to tensors, alone or under a
    ``"state_dict"`` key (as training checkpoints keep it) — else None. Files of
    convexrobust's own formats (an ``"architecture"`` or ``"format"`` key) hold none."""
    if not isinstance(stored, Mapping) or "architecture" in stored or "format" in stored:
        return None
    inner = stored.get("state_dict", stored)
    if isinstance(inner, Mapping) and inner and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in inner.items()):
        return inner
    return None


def _reason(err: BaseException) -> str:
    """``Type: first sentence`` of an exception, short enough for a one-line message."""
    lines = str(err).strip().splitlines()
    text = lines[0].split(". ")[0] if lines else ""
    return f"{type(err).__name__}{': ' + text if text else ''}"[:150]


def _describe(stored: object) -> str:
    """Why a file's content is not a network (a few words)."""
    if _state_dict_in(stored) is not None:
        return ("a state_dict with no architecture: name its class with model_class "
                "(--model-class package.module:Class) and its kwargs (--model-kwargs)")
    if isinstance(stored, Mapping):
        keys = sorted(map(str, stored))
        return f"a dict with keys {keys[:6]}{' …' if len(keys) > 6 else ''}, not a network"
    return f"a {type(stored).__name__}, not a network"


def load_network(path: str | os.PathLike, *, trust_pickle: bool = False,
                 model_class: str | None = None,
                 model_kwargs: Mapping | str | None = None) -> nn.Module:
    """The network in the file ``path``, on the CPU, in eval mode. Formats, tried in order:

    1. a TorchScript archive (``torch.jit.save``), read with ``torch.jit.load`` and returned as
       a :class:`TorchScriptNetwork`;
    2. a ``torch.save`` file, read from weights only (nothing is unpickled; with
       ``trust_pickle`` fully — unpickling runs code, so only for files you trust) holding
       a :class:`~convexrobust.RobustModel`, a registered architecture's ``save``
       (:data:`ARCHITECTURES`), a state dict (alone or under ``"state_dict"``) of the class
       ``model_class`` (``"package.module:Class"``, built with ``model_kwargs``, a mapping or
       its JSON text: :func:`network_from_state_dict`), or, with ``trust_pickle`` only, a whole
       pickled ``nn.Module``.

    A file that is none of these raises :class:`InvalidInputError` naming each format tried
    and why it failed; a file of a known format whose content is damaged or does not fit (bad
    weights, a state dict that does not fit ``model_class``) raises that format's own error.
    A malformed ``model_class`` or ``model_kwargs`` is an error before the file is read."""
    from convexrobust.robust_model import (  # here: robust_model builds on this registry
        RobustModel,
        is_robust_model_file,
    )

    path = Path(path)
    if model_class is not None:
        import_model_class(model_class)
        _model_kwargs(model_kwargs)
    elif model_kwargs is not None:
        raise InvalidInputError("model kwargs (--model-kwargs) need a model class: pass "
                                "model_class (--model-class package.module:Class)")
    if not path.is_file():
        raise InvalidInputError(f"no network file at {path}: check the path")
    try:
        script = load_torchscript(path)
    except Exception as err:  # noqa: BLE001 - torch.jit.load raises several types here
        tried = [f"(1) TorchScript archive: {_reason(err)}"]
    else:
        return TorchScriptNetwork(script).eval()
    try:
        stored = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # noqa: BLE001 - torch.load raises several types here
        hint = ("" if trust_pickle else "; if it pickles a whole module and you trust it, "
                "pass trust_pickle=True (--trust-pickle)")
        tried.append(f"(2) torch.save file: {_reason(err)}{hint}")
    else:
        if isinstance(stored, nn.Module):
            return stored.eval()
        if is_robust_model_file(stored):
            return RobustModel.load(path, trust_pickle=trust_pickle)
        state_dict = _state_dict_in(stored)
        if state_dict is not None and model_class is not None:
            return network_from_state_dict(model_class, state_dict, model_kwargs).eval()
        if isinstance(stored, Mapping) and "config" in stored and "state_dict" in stored:
            return network_from_dict(stored).eval()
        tried.append(f"(2) torch.save file: it holds {_describe(stored)}")
    raise InvalidInputError(f"cannot read {path} as a network; tried, in order: "
                            f"{'; '.join(tried)}")
