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


def resolve_arch(ref: str) -> Arch:
    """An ``Arch`` from a preset name, an IR JSON file or a compact architecture string."""
    from pathlib import Path

    if ref in _builtin() or ref.endswith("/reference"):
        return get_preset(ref)
    if ref.endswith(".json") or Path(ref).is_file():
        return Arch.from_json(Path(ref))
    if " " not in ref.strip():
        raise ValueError(f"{ref!r} is not a preset ({', '.join(list_presets())}), an existing .json file "
                         "or an architecture string ('in3x32 stem[...] <blocks> head[...] n10')")
    return Arch.from_string(ref)


def describe_arch(arch: Arch) -> dict:
    """The IR JSON dict of ``arch`` with ``key``, ``params`` and ``macs`` added."""
    from blocks.builder import build_model
    from blocks.counting import count_params_macs

    params, macs = count_params_macs(build_model(arch), (arch.in_channels, arch.input_size, arch.input_size))
    return {**arch.to_dict(), "key": arch.key, "params": params, "macs": macs}
