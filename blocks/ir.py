"""The architecture IR: frozen dataclasses that every searcher returns and every stage consumes.

One network has one ``arch.key``: a ``BlockSpec`` refuses a knob its block type ignores unless the knob
holds its neutral value (``UNUSED_KNOBS``: a depthwise-separable ``ds`` block has no expansion, a plain
``conv`` layer has neither expansion nor squeeze-and-excitation, only ``gir`` has a group width), so no two
specs build the same layers. The knobs added after the first release (``OPTIONAL_KNOBS``: ``group_width``,
``attn``) are left out of the JSON form at their neutral value, so every key written before them still holds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# inverted residual, fused IR, grouped IR (grouped kxk instead of depthwise), depthwise-separable, plain conv
BLOCK_TYPES = ("ir", "fir", "gir", "ds", "conv")
ACTIVATIONS = ("relu", "relu6", "swish", "hswish")
STRIDES = (1, 2)
KNOBS = ("type", "kernel", "expansion", "depth", "se", "act")  # the searchable fields every space has, genome order
# Searchable fields a space may add after KNOBS (genome order), each with its neutral value: a space that does not
# name one has no gene for it and every block holds the neutral value.
OPTIONAL_KNOBS: dict[str, int] = {"group_width": 0, "attn": 0}
# Knobs a block type ignores, with the one (neutral) value each must hold there; see the module docstring.
UNUSED_KNOBS: dict[str, dict[str, int | float]] = {
    "ir": {"group_width": 0}, "fir": {"group_width": 0}, "gir": {},
    "ds": {"expansion": 1, "group_width": 0}, "conv": {"expansion": 1, "se": 0.0, "group_width": 0, "attn": 0},
}


def _fail(field_name: str, value: Any, allowed: str, where: str) -> None:
    raise ValueError(f"{where}: {field_name} {value!r} is not allowed; allowed: {allowed}")


def _as_number(value: Any, field_name: str, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(field_name, value, "a number", where)
    return int(value) if float(value).is_integer() else float(value)


# Size limits, checked before anything is built or allocated (a typo like depth 100000 fails at once).
LIMITS = {"kernel": 31, "depth": 64, "out_channels": 16384, "expansion": 64, "input_size": 4096,
          "attn": 64, "group_width": 4096, "num_classes": 100_000, "in_channels": 64, "channels": 16384,
          "blocks": 64, "stem": 16}


def _check_limit(field_name: str, value: int | float, where: str) -> None:
    if value > LIMITS[field_name]:
        _fail(field_name, value, f"at most {LIMITS[field_name]} (blocks.ir.LIMITS)", where)


def _as_int(value: Any, field_name: str, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(field_name, value, f"an integer >= {minimum}", where)
    return value


def _check_keys(data: dict, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")


@dataclass(frozen=True)
class BlockSpec:
    """One block slot (or one fixed stem layer): ``depth`` layers of one type.

    The first layer applies ``stride`` and maps the input channels to ``out_channels``; the others
    keep the shape (and get a residual connection where the block type has one).
    """

    type: str  # block code, one of BLOCK_TYPES
    kernel: int  # spatial kernel size of the (depthwise) conv
    stride: int  # stride of the first layer
    out_channels: int  # output channels (the block's width)
    expansion: int | float = 1  # hidden width = expansion * input channels (ir, fir; 1 elsewhere)
    depth: int = 1  # number of layers in the block
    se: float = 0.0  # squeeze-and-excitation ratio of the block input channels; 0 = off (always 0 for conv)
    act: str = "relu"  # activation, one of ACTIVATIONS
    group_width: int = 0  # channels per group of the grouped kxk conv (gir only, >= 2); 0 elsewhere
    attn: int = 0  # heads of the self-attention layer closing the block (blocks.layers.LocalGlobalAttention); 0 = none

    def __post_init__(self) -> None:
        where = "BlockSpec"
        if self.type not in BLOCK_TYPES:
            _fail("type", self.type, ", ".join(BLOCK_TYPES), where)
        kernel = _as_int(self.kernel, "kernel", where)
        if kernel % 2 == 0:
            _fail("kernel", kernel, "an odd integer (1, 3, 5, 7, ...)", where)
        if self.stride not in STRIDES or isinstance(self.stride, bool):
            _fail("stride", self.stride, ", ".join(map(str, STRIDES)), where)
        _as_int(self.out_channels, "out_channels", where)
        _as_int(self.depth, "depth", where)
        expansion = _as_number(self.expansion, "expansion", where)
        if not expansion > 0:  # NaN fails here too
            _fail("expansion", expansion, "a number > 0", where)
        for name, value in (("kernel", kernel), ("depth", self.depth), ("out_channels", self.out_channels),
                            ("expansion", expansion)):
            _check_limit(name, value, where)
        se = float(_as_number(self.se, "se", where))
        if not 0.0 <= se < 1.0:
            _fail("se", se, "a ratio in [0, 1); 0 turns squeeze-and-excitation off", where)
        if self.act not in ACTIVATIONS:
            _fail("act", self.act, ", ".join(ACTIVATIONS), where)
        object.__setattr__(self, "expansion", expansion)
        object.__setattr__(self, "se", se)
        self._check_optional(where)
        for knob, neutral in UNUSED_KNOBS.get(self.type, {}).items():
            if getattr(self, knob) != neutral:
                raise ValueError(f"{where}: {knob} {getattr(self, knob)!r} has no effect on a {self.type!r} block; "
                                 f"use {knob} {neutral} (blocks.ir.UNUSED_KNOBS), so one network has one key")

    def _check_optional(self, where: str) -> None:
        """Group width and attention heads: integers in range that divide the channels they split."""
        for name in OPTIONAL_KNOBS:
            _check_limit(name, _as_int(getattr(self, name), name, where, minimum=0), where)
        if self.type == "gir":
            if self.group_width < 2:
                _fail("group_width", self.group_width, "an integer >= 2 for a 'gir' block (1 is the depthwise "
                      "'ir' block)", where)
            hidden = int(round(self.out_channels * self.expansion))
            if hidden % self.group_width:
                _fail("group_width", self.group_width, f"a divisor of the hidden width {hidden} "
                      f"(expansion {self.expansion:g} x {self.out_channels} channels)", where)
        if self.attn and self.out_channels % self.attn:
            _fail("attn", self.attn, f"a number of heads dividing out_channels {self.out_channels}", where)

    def check_input(self, in_channels: int, where: str = "BlockSpec") -> None:
        """Raises ``ValueError`` when the first layer cannot take ``in_channels`` (a gir group width that does
        not divide its hidden width); the other layers were checked at construction."""
        hidden = int(round(in_channels * self.expansion))
        if self.type == "gir" and hidden % self.group_width:
            _fail("group_width", self.group_width, f"a divisor of the first layer's hidden width {hidden} "
                  f"(expansion {self.expansion:g} x {in_channels} input channels)", where)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this block (optional knobs only where they differ from their neutral value)."""
        data = {
            "type": self.type, "kernel": self.kernel, "stride": self.stride,
            "out_channels": self.out_channels, "expansion": self.expansion, "depth": self.depth,
            "se": self.se, "act": self.act,
        }
        data.update({k: getattr(self, k) for k, neutral in OPTIONAL_KNOBS.items() if getattr(self, k) != neutral})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "BlockSpec") -> BlockSpec:
        """Builds a block from its JSON form; unknown or missing keys raise ``ValueError``."""
        keys = ("type", "kernel", "stride", "out_channels", "expansion", "depth", "se", "act", *OPTIONAL_KNOBS)
        _check_keys(data, keys, where)
        missing = [k for k in ("type", "kernel", "stride", "out_channels") if k not in data]
        if missing:
            raise ValueError(f"{where}: missing key {missing[0]!r}")
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(str(err).replace("BlockSpec", where, 1)) from None

    def with_knobs(self, **knobs: Any) -> BlockSpec:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **knobs)

    def __str__(self) -> str:
        from blocks.convert import block_to_string

        return block_to_string(self)


@dataclass(frozen=True)
class HeadSpec:
    """The classifier head: optional 1x1 conv to ``channels``, global pooling, dropout, linear."""

    channels: int = 0  # width of the 1x1 conv before pooling; 0 = no conv
    act: str = "relu"  # activation after the 1x1 conv
    dropout: float = 0.0  # dropout before the linear layer

    def __post_init__(self) -> None:
        where = "HeadSpec"
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 0:
            _fail("channels", self.channels, "an integer >= 0 (0 = no 1x1 conv)", where)
        _check_limit("channels", self.channels, where)
        if self.act not in ACTIVATIONS:
            _fail("act", self.act, ", ".join(ACTIVATIONS), where)
        dropout = float(_as_number(self.dropout, "dropout", where))
        if not 0.0 <= dropout < 1.0:
            _fail("dropout", dropout, "a probability in [0, 1)", where)
        object.__setattr__(self, "dropout", dropout)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this head."""
        return {"channels": self.channels, "act": self.act, "dropout": self.dropout}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadSpec:
        """Builds a head from its JSON form."""
        _check_keys(data, ("channels", "act", "dropout"), "head")
        return cls(**data)


@dataclass(frozen=True)
class Arch:
    """A whole network: input, fixed stem, one BlockSpec per searchable slot, head.

    Self-contained: the JSON of an ``Arch`` alone builds the model. ``provenance`` (which searcher
    made it, with which settings) takes no part in equality or in ``key``.
    """

    input_size: int  # square input resolution
    num_classes: int
    stem: tuple[BlockSpec, ...]
    blocks: tuple[BlockSpec, ...]
    head: HeadSpec
    in_channels: int = 3
    space: str | None = None  # name of the search space it belongs to, if any
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        where = "Arch"
        for name in ("input_size", "num_classes", "in_channels"):
            _check_limit(name, _as_int(getattr(self, name), name, where), where)
        object.__setattr__(self, "stem", tuple(self.stem))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        _check_limit("blocks", len(self.blocks), where)
        _check_limit("stem", len(self.stem), where)
        if not self.blocks:
            raise ValueError("Arch: blocks is empty; an architecture needs at least one block slot")
        for name in ("stem", "blocks"):
            for i, spec in enumerate(getattr(self, name)):
                if not isinstance(spec, BlockSpec):
                    raise ValueError(f"Arch: {name}[{i}] must be a BlockSpec, got {type(spec).__name__}")
        if not isinstance(self.head, HeadSpec):
            raise ValueError(f"Arch: head must be a HeadSpec, got {type(self.head).__name__}")

    # Conversions (implemented in blocks.convert, the one module for them).
    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON form (a dict with ``schema_version``)."""
        from blocks.convert import arch_to_dict

        return arch_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        """Reads the JSON form; a newer ``schema_version`` raises a clear ``ValueError``."""
        from blocks.convert import arch_from_dict

        return arch_from_dict(data)

    def to_json(self, path: str | Path | None = None) -> str:
        """The JSON text; written atomically to ``path`` when given."""
        from blocks.convert import arch_to_json

        return arch_to_json(self, path)

    @classmethod
    def from_json(cls, source: str | Path) -> Arch:
        """Reads an ``Arch`` from a JSON file path or from JSON text."""
        from blocks.convert import arch_from_json

        return arch_from_json(source)

    def to_string(self) -> str:
        """The compact human-readable form (see ``blocks.convert``)."""
        from blocks.convert import arch_to_string

        return arch_to_string(self)

    @classmethod
    def from_string(cls, text: str) -> Arch:
        """Parses the compact form written by ``to_string``."""
        from blocks.convert import arch_from_string

        return arch_from_string(text)

    def __str__(self) -> str:
        return self.to_string()

    @property
    def key(self) -> str:
        """Canonical hash naming this network in every cache and table (ignores space and provenance)."""
        data = self.to_dict()
        for name in ("schema_version", "space", "provenance"):
            data.pop(name, None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_provenance(self, provenance: dict[str, Any]) -> Arch:
        """A copy with ``provenance`` replaced."""
        return replace(self, provenance=dict(provenance))

    def with_blocks(self, blocks: tuple[BlockSpec, ...] | list[BlockSpec]) -> Arch:
        """A copy with the searchable blocks replaced."""
        return replace(self, blocks=tuple(blocks))
