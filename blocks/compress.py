"""The space of cheaper versions of one network, for hardware-aware model compression (DONNA, section 5).

Every searchable block of the model becomes a slot with the block's own stride and output channels, so every
option keeps the slot's input and output shapes; its choices are the block's own value of every knob and the
cheaper ones: fewer repeats, smaller kernels and expansions, squeeze-excite and attention optional, and a cheaper
block type where one takes the same knobs (``CHEAPER_TYPES``: the depthwise ``ir`` for a fused ``fir`` or a
grouped ``gir`` block). Activation and group width stay the model's. The stem and head are the model's. The model is the
space's largest member (``SearchSpace.reference``), so it is the teacher whose blocks are distilled.
"""

from __future__ import annotations

from typing import Any

from blocks.ir import OPTIONAL_KNOBS, UNUSED_KNOBS, Arch, BlockSpec
from blocks.spaces import SearchSpace

EXPANSIONS = (1, 2, 3, 4, 6)  # the expansions offered below a block's own (as EfficientNet and DONNA's spaces)
# Cheaper block types offered beside a block's own: at the same kernel and expansion a depthwise kxk costs less than
# a fused dense kxk or a grouped kxk. The depthwise-separable ``ds`` is cheaper than ``ir`` too, but it ignores the
# expansion, so a slot cannot offer it next to several expansions (one network, one key): not offered.
CHEAPER_TYPES: dict[str, tuple[str, ...]] = {"fir": ("ir",), "gir": ("ir",)}


def _kernels(kernel: int) -> list[int]:
    return list(range(3 if kernel >= 3 else kernel, kernel + 1, 2))


def _expansions(expansion: float) -> list[float]:
    return sorted({e for e in EXPANSIONS if 2 <= e < expansion} | {expansion})


def slot_choices(spec: BlockSpec) -> dict[str, list[Any]]:
    """The choices of the slot made from ``spec``: its own value of every knob last (optional knobs first, as
    ``SearchSpace.reference`` reads them), cheaper values before it, knobs its type ignores fixed."""
    ignored = UNUSED_KNOBS.get(spec.type, {})
    choices: dict[str, list[Any]] = {
        "type": [*CHEAPER_TYPES.get(spec.type, ()), spec.type],  # the model's own last: the reference's
        "kernel": _kernels(spec.kernel),
        "expansion": [spec.expansion] if "expansion" in ignored else _expansions(spec.expansion),
        "depth": list(range(1, spec.depth + 1)),
        "se": [spec.se] if "se" in ignored or spec.se == 0 else [0.0, spec.se],
        "act": [spec.act],
    }
    if spec.group_width != OPTIONAL_KNOBS["group_width"]:
        choices["group_width"] = [spec.group_width]
    if spec.attn != OPTIONAL_KNOBS["attn"] and "attn" not in ignored:
        choices["attn"] = [spec.attn, 0]  # the model's own first: the reference takes an optional knob's first value
    return choices


def compression_space_dict(arch: Arch, description: str = "") -> dict[str, Any]:
    """The JSON form (``blocks/spaces.json``) of the space of cheaper versions of ``arch``."""
    slots = [{"stride": spec.stride, "out_channels": spec.out_channels, "choices": slot_choices(spec)}
             for spec in arch.blocks]
    optional = sorted({k for s in slots for k in s["choices"] if k in OPTIONAL_KNOBS})
    for slot in slots:  # a knob one slot searches is a gene of every slot: the others hold its neutral value
        slot["choices"].update({k: [OPTIONAL_KNOBS[k]] for k in optional if k not in slot["choices"]})
    return {"description": description or f"cheaper versions of {arch.key} (donna compress)",
            "input_size": arch.input_size, "in_channels": arch.in_channels, "num_classes": arch.num_classes,
            "stem": [spec.to_dict() for spec in arch.stem], "head": arch.head.to_dict(), "slots": slots}


def compression_space(arch: Arch, name: str | None = None) -> SearchSpace:
    """The space of cheaper versions of ``arch``, named ``name`` (default ``compress-<key>``).

    Raises:
        ValueError: ``arch`` has a block the space cannot hold (the message names the slot).
    """
    name = name or f"compress-{arch.key}"
    space = SearchSpace.from_dict(name, compression_space_dict(arch))
    reference = space.reference()
    if reference.blocks != arch.blocks:  # the model must be a member, and the largest
        raise ValueError(f"the space derived from {arch.key} does not have the model as its largest member")
    return space
