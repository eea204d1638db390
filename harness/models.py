"""Models: built-ins and user plug-ins, returned as ``nn.Module``. Nothing here knows of timing.

Built-ins: ``linear`` (logistic or linear regression), ``mlp`` (ReLU layers of ``--hidden``
widths) and ``cnn`` (two small conv layers for square single-channel images, such as
``digits`` and ``mnist-like``). A plug-in is ``module:callable`` or ``path/to/file.py:callable``;
it is called as ``factory(n_features=F, n_outputs=K)`` (K classes, or 1 for regression) and
must return an ``nn.Module`` that maps a ``(B, F)`` float tensor to ``(B, K)``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.errors import SpecError

BUILTINS = ("linear", "mlp", "cnn")

Factory = Callable[..., nn.Module]


class ImageCNN(nn.Module):
    """Conv(16) -> pool -> Conv(32) -> global average -> linear, on flat square images."""

    def __init__(self, n_features: int, n_outputs: int):
        super().__init__()
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise SpecError("--model", f"cnn needs square single-channel images, but {n_features} features is not a square; use mlp or linear")
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2) if side >= 4 else nn.Identity(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], 1, self.side, self.side)
        return self.head(self.features(x).flatten(1))


def _mlp(n_features: int, n_outputs: int, hidden: tuple[int, ...]) -> nn.Module:
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def resolve(name: str) -> Factory:
    """A factory for ``name``; a plug-in that cannot be imported is a ``SpecError`` now,
    before the sweep starts."""
    if name in BUILTINS:
        return lambda **kw: build_builtin(name, **kw)
    if ":" not in name:
        raise SpecError("--model", f"unknown model {name!r}; use {', '.join(BUILTINS)}, module:callable or path/to/file.py:callable")
    target, _, attr = name.rpartition(":")
    if not target or not attr:
        raise SpecError("--model", f"{name!r} is not module:callable or path/to/file.py:callable")
    if target.endswith(".py"):
        module = _load_file(target)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise SpecError("--model", f"cannot import module {target!r}: {exc}") from None
        except Exception as exc:  # the plug-in's own code failed at import
            raise SpecError("--model", f"importing {target!r} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise SpecError("--model", f"{target!r} has no attribute {attr!r}")
    if not callable(factory):
        raise SpecError("--model", f"{target}:{attr} is not callable")
    return factory


def build_builtin(name: str, *, n_features: int, n_outputs: int, hidden: tuple[int, ...] = (32,)) -> nn.Module:
    if name == "linear":
        return nn.Linear(n_features, n_outputs)
    if name == "mlp":
        return _mlp(n_features, n_outputs, hidden)
    return ImageCNN(n_features, n_outputs)


def build(name: str, factory: Factory, *, n_features: int, n_outputs: int, hidden: tuple[int, ...]) -> nn.Module:
    """Instantiate a model; the built-ins take ``hidden``, plug-ins only the two sizes."""
    if name in BUILTINS:
        return build_builtin(name, n_features=n_features, n_outputs=n_outputs, hidden=hidden)
    try:
        model = factory(n_features=n_features, n_outputs=n_outputs)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError("--model", f"{name}(n_features={n_features}, n_outputs={n_outputs}) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise SpecError("--model", f"{name} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_file(path_text: str):
    path = Path(path_text)
    if not path.is_file():
        raise SpecError("--model", f"plug-in file not found: {path}")
    key = "batchbench_plugin_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise SpecError("--model", f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[key]
        raise SpecError("--model", f"loading {path} failed: {type(exc).__name__}: {exc}") from None
    return module
