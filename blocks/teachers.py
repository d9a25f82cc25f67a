"""Teacher adapters: cut a network into stem / block slots / head aligned with a search space.

A teacher is first cut into a sequence of *units* (its stages or layers) and a head; units are then
grouped so that the stem and every block slot of the space end exactly where the teacher produces
the same (C, H, W) output. A teacher whose shapes disagree with the space raises a ``ValueError``
that names the slot and both shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from blocks.builder import ArchNet
from blocks.spaces import SearchSpace

Shape = tuple[int, int, int]


class TeacherParts(ArchNet):
    """A teacher cut as ``stem -> blocks[0] -> ... -> blocks[n-1] -> head`` (``blocks`` align with slots)."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, shapes: list[Shape],
                 name: str = "teacher") -> None:
        super().__init__(stem, blocks, head)
        self.shapes = shapes  # output shape of the stem, then of every block slot
        self.name = name


def _cut_efficientnet(model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    feats = model.features
    head = nn.Sequential(feats[-1], model.avgpool, nn.Flatten(1), model.classifier)
    return list(feats[:-1]), head


def _cut_mobilenet_v2(model: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    feats = model.features
    head = nn.Sequential(feats[-1], nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.classifier)
    return list(feats[:-1]), head


def _cut_archnet(model: ArchNet) -> tuple[list[nn.Module], nn.Module]:
    return list(model.stem) + list(model.blocks), model.head


# torchvision model name prefix -> function cutting it into (units, head)
TORCHVISION_CUTTERS: dict[str, Callable[[nn.Module], tuple[list[nn.Module], nn.Module]]] = {
    "efficientnet_": _cut_efficientnet,
    "mobilenet_v2": _cut_mobilenet_v2,
}


def _cutter_for(name: str) -> Callable[[nn.Module], tuple[list[nn.Module], nn.Module]]:
    for prefix, cutter in TORCHVISION_CUTTERS.items():
        if name.startswith(prefix):
            return cutter
    known = ", ".join(f"{p}*" if p.endswith("_") else p for p in TORCHVISION_CUTTERS)
    raise ValueError(f"no teacher adapter for torchvision model {name!r}; supported: {known}")


def load_torchvision_model(name: str, weights: str | Path | None = None, num_classes: int | None = None):
    """Builds torchvision model ``name``; loads ``weights`` from a local file (never downloads).

    Args:
        name: torchvision model name, e.g. ``efficientnet_b0`` or ``mobilenet_v2``.
        weights: a ``state_dict`` file (``torch.save``), optionally wrapped as ``{"state_dict": ...}``.
        num_classes: classifier width; inferred from the weights file when it is given.
    """
    _cutter_for(name)
    state = None
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"teacher weights file {str(path)!r} does not exist; pass --teacher-weights "
                             f"with a local torchvision {name} state_dict file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        linear = [v for k, v in state.items() if k.startswith("classifier") and k.endswith("weight")]
        num_classes = linear[-1].shape[0] if linear else num_classes
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes or 1000)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise ValueError(f"{weights}: not a state_dict of torchvision {name}: {first}") from None
    return model


@torch.no_grad()
def _unit_shapes(units: list[nn.Module], input_shape: Shape) -> list[Shape]:
    x = torch.zeros(1, *input_shape)
    shapes = []
    for unit in units:
        was_training = unit.training
        unit.eval()
        x = unit(x)
        unit.train(was_training)
        shapes.append(tuple(x.shape[1:]))
    return shapes


def _fmt(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _boundaries(shapes: list[Shape], targets: list[Shape]) -> list[int]:
    """Index of the last unit of the stem and of every slot, matching ``targets`` in order."""
    ends, pos = [], 0
    for k, target in enumerate(targets):
        where = "stem" if k == 0 else f"slot {k - 1}"
        j = next((j for j in range(pos, len(shapes)) if shapes[j] == target), None)
        if j is None:
            same_res = [s for s in shapes[pos:] if s[1:] == target[1:]]
            got = _fmt(same_res[0]) if same_res else (_fmt(shapes[pos]) if pos < len(shapes) else "nothing")
            raise ValueError(f"{where}: the space expects output {_fmt(target)} but the teacher gives {got} "
                             f"there (teacher stage outputs: {', '.join(map(_fmt, shapes))}); use a space "
                             "whose slot widths and strides follow this teacher")
        next_target = targets[k + 1] if k + 1 < len(targets) else None
        while j + 1 < len(shapes) and shapes[j + 1] == target and next_target != target:
            j += 1
        ends.append(j)
        pos = j + 1
    if pos != len(shapes):
        raise ValueError(f"the teacher has stages after the last slot (outputs {', '.join(map(_fmt, shapes[pos:]))})"
                         f"; the space expects the head input {_fmt(targets[-1])}")
    return ends


def align_teacher(units: list[nn.Module], head: nn.Module, space: SearchSpace, name: str = "teacher"):
    """Groups a teacher's ``units`` into stem and block slots matching ``space``'s shapes."""
    input_shape = (space.in_channels, space.input_size, space.input_size)
    shapes = _unit_shapes(units, input_shape)
    targets = [space.stem_output_shape()] + [space.slot_output_shape(i) for i in range(space.num_slots)]
    ends = _boundaries(shapes, targets)
    starts = [0] + [e + 1 for e in ends[:-1]]
    groups = [nn.Sequential(*units[s:e + 1]) for s, e in zip(starts, ends)]
    return TeacherParts(groups[0], groups[1:], head, [shapes[e] for e in ends], name)


def cut_teacher(model: nn.Module, space: SearchSpace, name: str | None = None) -> TeacherParts:
    """Cuts ``model`` (our ``ArchNet`` or a supported torchvision model) into parts aligned with ``space``."""
    if isinstance(model, ArchNet):
        units, head = _cut_archnet(model)
        name = name or "archnet"
    else:
        name = name or type(model).__name__.lower()
        units, head = _cutter_for(name)(model)
    return align_teacher(units, head, space, name)


def torchvision_teacher(name: str, space: SearchSpace, weights: str | Path | None = None) -> TeacherParts:
    """Loads torchvision ``name`` from a local weights file and cuts it for ``space``."""
    model = load_torchvision_model(name, weights, num_classes=space.num_classes)
    return cut_teacher(model, space, name)


def classifier_of(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The classifier of ``model`` (its last ``nn.Linear``) and its qualified name; None when it has none."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


def replace_classifier(model: nn.Module, num_classes: int, seed: int) -> str:
    """Gives ``model`` a new classifier for ``num_classes`` classes, in place; returns the layer's qualified name.

    The new layer's weights are drawn from ``seed`` alone (normal, sd 0.01; zero bias, as torchvision and our
    builder initialise classifiers), so the same seed gives the same layer.

    Raises:
        ValueError: ``model`` has no linear classifier.
    """
    found = classifier_of(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace for {num_classes} classes")
    name, old = found
    parent, _, attr = name.rpartition(".")
    generator = torch.Generator().manual_seed(seed)
    new = nn.Linear(old.in_features, num_classes)
    with torch.no_grad():
        new.weight.copy_(torch.randn(new.weight.shape, generator=generator) * 0.01)
        new.bias.zero_()
    setattr(model.get_submodule(parent), attr, new.to(device=old.weight.device, dtype=old.weight.dtype))
    return name
