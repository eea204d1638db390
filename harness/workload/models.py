"""Models: built-ins and user plug-ins, returned as ``nn.Module``. Nothing here knows of timing.

Built-ins: ``linear`` (logistic or linear regression), ``mlp`` (ReLU layers of ``--hidden``
widths; both flatten shaped samples), ``cnn`` (two small conv layers for images: ``(C, H,
W)`` samples, or flat square single-channel ones such as ``digits`` and ``mnist-like``), and
the realistic ``resnet`` (``cifar-like``) and ``gpt`` (``text``) of ``harness.workload.architectures``.

A plug-in is ``module:callable`` or ``path/to/file.py:callable``, called with the keywords it
takes of ``n_features`` (the size of one sample), ``input_shape`` (its shape) and ``n_outputs``
(K classes, or 1 for regression). It returns an ``nn.Module`` mapping a batch ``(B, *input_shape)``
to ``(B, K)`` logits (``(B, T, K)`` for per-token targets ``(B, T)``), or a ``(module, loss_fn)``
pair whose ``loss_fn(output, target)`` returns the batch's mean loss as a scalar tensor.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from harness.workload.architectures import GPT, ResNet
from harness.errors import SpecError, users_failure, users_own
from harness.workload import lightning, plugins

BUILTINS = ("linear", "mlp", "cnn", "resnet", "gpt")
TOKEN_MODELS = ("gpt",)
"""Built-ins that take integer token ids; the others take float features."""

Factory = Callable[..., nn.Module]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ImageCNN(nn.Module):
    """Conv(16) -> pool -> Conv(32) -> global average -> linear, on ``(C, H, W)`` images or
    flat square single-channel ones."""

    def __init__(self, n_features: int, n_outputs: int, input_shape: tuple[int, ...] | None = None):
        super().__init__()
        if input_shape is not None and len(input_shape) == 3:
            self.shape = tuple(input_shape)
        else:
            side = math.isqrt(n_features)
            if side * side != n_features:
                raise SpecError("--model", f"cnn needs (C, H, W) images or square single-channel ones, but {n_features} features is not a square; use mlp or linear")
            self.shape = (1, side, side)
        channels, side = self.shape[0], min(self.shape[1:])
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2) if side >= 4 else nn.Identity(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.shape)
        return self.head(self.features(x).flatten(1))


def _mlp(n_features: int, n_outputs: int, hidden: tuple[int, ...], flatten: bool = False) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    width = n_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def from_object(model) -> tuple[str, Factory]:
    """A factory or an ``nn.Module`` handed over in memory, as (name, factory); the plan takes
    the factory as an object. A module is copied for every point (each starts from the same
    weights); its name carries a digest of its parameter shapes, a factory's its qualified name,
    so reruns get the same point ids."""
    if isinstance(model, nn.Module):
        import copy

        shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
        name = f"python:{type(model).__name__}#{hashlib.sha1(shapes.encode()).hexdigest()[:8]}"
        template = copy.deepcopy(model).cpu()
        return name, lambda **_: copy.deepcopy(template)
    if not callable(model):
        raise SpecError("model", f"expected an nn.Module or a factory, got {type(model).__name__}")
    name = f"python:{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', type(model).__name__)}"
    return name, model


def resolve(name: str) -> Factory:
    """A factory for ``name``; a plug-in that cannot be imported is a ``SpecError`` now,
    before the sweep starts."""
    if name in BUILTINS:
        return lambda **kw: build_builtin(name, **kw)
    if ":" not in name:
        raise SpecError("--model", f"unknown model {name!r}; use {', '.join(BUILTINS)}, module:callable or path/to/file.py:callable")
    return plugins.load_callable(name, "--model")


def build_builtin(name: str, *, n_features: int, n_outputs: int, input_shape: tuple[int, ...] | None = None,
                  hidden: tuple[int, ...] = (32,), **knobs: Any) -> nn.Module:
    """A built-in model; ``hidden`` and the other ``knobs`` (``Axis.to_model``) are used by the
    models they mean something to (``hidden``: the mlp's widths) and ignored by the others."""
    flatten = input_shape is not None and len(input_shape) > 1  # flat rows need no view (a dispatch a step)
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_outputs)) if flatten else nn.Linear(n_features, n_outputs)
    if name == "mlp":
        return _mlp(n_features, n_outputs, hidden, flatten)
    if name == "resnet":
        if input_shape is None or len(input_shape) != 3:
            raise SpecError("--model", f"resnet needs (C, H, W) images (e.g. --dataset cifar-like), not samples of shape {input_shape}")
        return ResNet(tuple(input_shape), n_outputs)
    if name == "gpt":
        if input_shape is None or len(input_shape) != 1:
            raise SpecError("--model", f"gpt needs (T,) token-id sequences (e.g. --dataset text), not samples of shape {input_shape}")
        return GPT(int(input_shape[0]), n_outputs)
    return ImageCNN(n_features, n_outputs, input_shape)


def build_with_loss(name: str, factory: Factory, *, n_features: int, n_outputs: int, input_shape: tuple[int, ...] | None = None,
                    knobs: Mapping[str, Any] | None = None) -> tuple[nn.Module, Loss | None]:
    """Instantiate a model and its loss: None for the built-ins and for plug-ins that return a
    module alone (the task's loss applies). The built-ins take the ``knobs`` (``hidden``, ...); a
    plug-in is passed the keywords it accepts of ``n_features``, ``input_shape`` and
    ``n_outputs``, and each knob it names (not through ``**kwargs``: a knob is news to a factory
    written before it). ``workload.Workload.build`` is the one caller."""
    shape = tuple(input_shape) if input_shape is not None else (n_features,)
    knobs = dict(knobs or {})
    if name in BUILTINS:
        return build_builtin(name, n_features=n_features, n_outputs=n_outputs, input_shape=shape, **knobs), None
    offered = {"n_features": n_features, "input_shape": shape, "n_outputs": n_outputs}
    kwargs = {**_accepted(factory, offered), **_named(factory, knobs)}
    try:
        with plugins.in_place():
            made = factory(**kwargs)
    except SpecError:
        raise
    except BaseException as exc:  # sys.exit() in a factory too: one line, nothing run
        if not users_own(exc):
            raise
        given = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise SpecError("--model", f"{name}({given}) failed: {users_failure(exc)}") from None
    model, loss = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(model, nn.Module):
        raise SpecError("--model", f"{name} returned {type(model).__name__}, not a torch.nn.Module or a (module, loss_fn) pair")
    if loss is not None and not callable(loss):
        raise SpecError("--model", f"{name} returned a loss that is not callable ({type(loss).__name__})")
    if lightning.is_lightning(model):
        if loss is not None:
            raise SpecError("--model", f"{name} returned a LightningModule and a loss; its training_step is the loss: return the module alone")
        return lightning.adapt(model)
    return model, loss


def fingerprint(module: nn.Module) -> str:
    """12 hex digits naming the shapes of a model's parameters, in order: the same network
    has the same fingerprint wherever its file lives and whatever it is called, so
    ``batchbench compare`` matches a plug-in across checkouts by its callable's name and this,
    not by its path; a changed layer width makes it another configuration."""
    shapes = ";".join("x".join(map(str, p.shape)) for p in module.parameters())
    return hashlib.sha1(shapes.encode()).hexdigest()[:12]


def _named(factory: Factory, knobs: dict) -> dict:
    """The knobs the factory names as parameters."""
    import inspect

    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in knobs.items() if k in names}


def _accepted(factory: Factory, offered: dict) -> dict:
    """The keywords of ``offered`` the factory takes (all of them if it takes ``**kwargs``)."""
    import inspect

    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: offer the original two
        return {k: offered[k] for k in ("n_features", "n_outputs")}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return dict(offered)
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in offered.items() if k in names}
