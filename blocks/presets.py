"""Named architectures written in the IR (EfficientNet-B0, MobileNetV2) and the spaces' references."""

from __future__ import annotations

import json
from importlib import resources

from blocks.convert import arch_from_dict
from blocks.ir import Arch
from blocks.spaces import get_space, list_spaces


def _builtin() -> dict:
    return json.loads(resources.files("blocks").joinpath("presets.json").read_text())


def list_presets() -> list[str]:
    """Names accepted by ``get_preset``: the shipped networks and ``<space>/reference``."""
    return sorted(_builtin()) + [f"{s}/reference" for s in list_spaces()]


def get_preset(name: str, num_classes: int | None = None) -> Arch:
    """A named architecture; ``num_classes`` replaces the classifier width when given."""
    presets = _builtin()
    if name in presets:
        arch = arch_from_dict(presets[name])
    elif name.endswith("/reference") and name.removesuffix("/reference") in list_spaces():
        arch = get_space(name.removesuffix("/reference")).reference()
    else:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}")
    if num_classes is not None:
        from dataclasses import replace

        arch = replace(arch, num_classes=num_classes)
    return arch
