"""Conversions between the IR forms: JSON dict, JSON text, compact string, integer genome.

The compact string, in the spirit of timm's block strings, reads for example::

    in3x32 stem[conv_d1_k3_s2_e1_c16_arelu] ir_d2_k5_s1_e4_c16_se0.25_aswish ... head[c128_arelu_dp0.2] n10 @mbconv-tiny

Each block token is
``<type>_d<depth>_k<kernel>_s<stride>_e<expansion>_c<out>[_g<width>][_se<ratio>][_mh<heads>]_a<act>``
(``_g``: channels per group of a ``gir`` block; ``_mh``: heads of its self-attention layer; both omitted at 0).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blocks.ir import SCHEMA_VERSION, UNUSED_KNOBS, Arch, BlockSpec, HeadSpec, _check_keys
from common.fileio import atomic_write_text

if TYPE_CHECKING:
    from blocks.spaces import SearchSpace

ARCH_KEYS = ("schema_version", "input_size", "in_channels", "num_classes", "stem", "blocks", "head", "key",
             "space", "provenance", "params", "macs", "preprocessing", "classes")  # the last four: annotations
_TOKEN_RE = {
    "depth": re.compile(r"^d(\d+)$"), "kernel": re.compile(r"^k(\d+)$"),
    "stride": re.compile(r"^s(\d+)$"), "expansion": re.compile(r"^e(\d+(?:\.\d+)?)$"),
    "out_channels": re.compile(r"^c(\d+)$"), "se": re.compile(r"^se(\d+(?:\.\d+)?)$"),
    "group_width": re.compile(r"^g(\d+)$"), "attn": re.compile(r"^mh(\d+)$"),
    "act": re.compile(r"^a([a-z0-9]+)$"),
}
_BLOCK_FORMAT = "<type>_d<depth>_k<kernel>_s<stride>_e<expansion>_c<out>[_g<width>][_se<ratio>][_mh<heads>]_a<act>"


def _num(x: int | float) -> str:
    return f"{x:g}"


# ---- dict / JSON -----------------------------------------------------------------------------

def arch_to_dict(arch: Arch) -> dict[str, Any]:
    """The versioned JSON dict of ``arch``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "input_size": arch.input_size,
        "in_channels": arch.in_channels,
        "num_classes": arch.num_classes,
        "stem": [b.to_dict() for b in arch.stem],
        "blocks": [b.to_dict() for b in arch.blocks],
        "head": arch.head.to_dict(),
        "space": arch.space,
        "provenance": dict(arch.provenance),
    }


def arch_from_dict(data: dict[str, Any]) -> Arch:
    """Reads a dict written by ``arch_to_dict`` (annotations are ignored: ``params``/``macs``, and the
    ``preprocessing``/``classes`` of a delivered model's ``arch.json``)."""
    _check_keys(data, ARCH_KEYS, "Arch")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise ValueError("Arch: schema_version is missing or not an integer; is this an architecture JSON?")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"Arch: schema_version {version} was written by a newer version of this toolkit "
            f"(this one reads up to {SCHEMA_VERSION}); upgrade the toolkit to read it")
    for key in ("input_size", "num_classes", "stem", "blocks", "head"):
        if key not in data:
            raise ValueError(f"Arch: missing key {key!r}")
    for key in ("stem", "blocks"):
        if not isinstance(data[key], list):
            raise ValueError(f"Arch: {key} must be a list of block objects")
    return Arch(
        input_size=data["input_size"],
        in_channels=data.get("in_channels", 3),
        num_classes=data["num_classes"],
        stem=tuple(BlockSpec.from_dict(b, f"stem[{i}]") for i, b in enumerate(data["stem"])),
        blocks=tuple(BlockSpec.from_dict(b, f"blocks[{i}]") for i, b in enumerate(data["blocks"])),
        head=HeadSpec.from_dict(data["head"]),
        space=data.get("space"),
        provenance=dict(data.get("provenance") or {}),
    )


def arch_to_json(arch: Arch, path: str | Path | None = None, extra: dict[str, Any] | None = None) -> str:
    """JSON text of ``arch`` (plus ``extra`` keys such as params/macs); written atomically to ``path``."""
    data = arch_to_dict(arch)
    data.update(extra or {})
    text = json.dumps(data, indent=2) + "\n"
    if path is not None:
        atomic_write_text(path, text)
    return text


def arch_from_json(source: str | Path) -> Arch:
    """Reads an ``Arch`` from a JSON file or JSON text, with errors that name the file.

    Files that carry an architecture under ``"ir"`` (a search's ``selected.json`` and front members) are
    accepted wherever an architecture file is.
    """
    text, origin = str(source), "text"
    if isinstance(source, Path) or not text.lstrip().startswith("{"):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"architecture file {str(path)!r} does not exist")
        text, origin = path.read_text(), str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{origin}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict) and "schema_version" not in data and isinstance(data.get("ir"), dict):
        data = data["ir"]  # selected.json / a front member: the architecture is its "ir"
    try:
        return arch_from_dict(data)
    except ValueError as err:
        if origin == "text":
            raise
        raise ValueError(f"{origin}: {err}") from None


# ---- compact string --------------------------------------------------------------------------

def block_to_string(spec: BlockSpec) -> str:
    """``ir_d2_k3_s2_e6_c24_se0.25_aswish`` for one block."""
    parts = [spec.type, f"d{spec.depth}", f"k{spec.kernel}", f"s{spec.stride}",
             f"e{_num(spec.expansion)}", f"c{spec.out_channels}"]
    if spec.group_width:
        parts.append(f"g{spec.group_width}")
    if spec.se > 0:
        parts.append(f"se{_num(spec.se)}")
    if spec.attn:
        parts.append(f"mh{spec.attn}")
    parts.append(f"a{spec.act}")
    return "_".join(parts)


def block_from_string(text: str) -> BlockSpec:
    """Parses one block token written by ``block_to_string``."""
    type_, *tokens = text.split("_")
    fields: dict[str, Any] = {"type": type_}
    for token in tokens:
        for name, pattern in _TOKEN_RE.items():
            match = pattern.match(token)
            if match and name not in fields:
                value = match.group(1)
                fields[name] = value if name == "act" else (float(value) if "." in value else int(value))
                break
        else:
            raise ValueError(f"block string {text!r}: cannot read token {token!r}; format: {_BLOCK_FORMAT}")
    missing = [k for k in ("kernel", "stride", "out_channels") if k not in fields]
    if missing:
        raise ValueError(f"block string {text!r}: missing {missing[0]}; format: {_BLOCK_FORMAT}")
    return BlockSpec(**fields)


def head_to_string(head: HeadSpec) -> str:
    """``c1280_aswish_dp0.2`` for a head."""
    return f"c{head.channels}_a{head.act}_dp{_num(head.dropout)}"


def head_from_string(text: str) -> HeadSpec:
    """Parses a head token written by ``head_to_string``."""
    match = re.fullmatch(r"c(\d+)_a([a-z0-9]+)_dp(\d+(?:\.\d+)?)", text)
    if not match:
        raise ValueError(f"head string {text!r}: expected c<channels>_a<act>_dp<dropout>")
    return HeadSpec(channels=int(match.group(1)), act=match.group(2), dropout=float(match.group(3)))


def arch_to_string(arch: Arch) -> str:
    """The compact whitespace-separated form of ``arch`` (provenance is not part of it)."""
    tokens = [f"in{arch.in_channels}x{arch.input_size}",
              "stem[" + "+".join(block_to_string(b) for b in arch.stem) + "]"]
    tokens += [block_to_string(b) for b in arch.blocks]
    tokens += [f"head[{head_to_string(arch.head)}]", f"n{arch.num_classes}"]
    if arch.space:
        tokens.append(f"@{arch.space}")
    return " ".join(tokens)


def arch_from_string(text: str) -> Arch:
    """Parses the compact form written by ``arch_to_string``."""
    tokens = text.split()
    usage = "expected 'in<C>x<size> stem[...] <block> ... head[...] n<classes> [@space]'"
    if len(tokens) < 5:
        raise ValueError(f"architecture string {text!r} is malformed: {usage}")
    space = tokens.pop()[1:] if tokens[-1].startswith("@") else None
    first, stem, *blocks, head, classes = tokens
    inp = re.fullmatch(r"in(\d+)x(\d+)", first)
    stem_m = re.fullmatch(r"stem\[(.*)\]", stem)
    head_m = re.fullmatch(r"head\[(.*)\]", head)
    cls_m = re.fullmatch(r"n(\d+)", classes)
    if not (inp and stem_m and head_m and cls_m):
        raise ValueError(f"architecture string {text!r} is malformed: {usage}")
    stem_specs = [block_from_string(s) for s in stem_m.group(1).split("+") if s]
    return Arch(input_size=int(inp.group(2)), in_channels=int(inp.group(1)), num_classes=int(cls_m.group(1)),
                stem=tuple(stem_specs), blocks=tuple(block_from_string(b) for b in blocks),
                head=head_from_string(head_m.group(1)), space=space)


# ---- genome ----------------------------------------------------------------------------------

def arch_to_genome(arch: Arch, space: SearchSpace) -> np.ndarray:
    """Integer genome of ``arch`` in ``space``: for each slot, one index per knob in ``space.knobs``.

    A knob the block's type ignores (it holds its neutral value) has gene 0: the slot offers it one value.
    """
    space.validate(arch)
    genes = []
    for slot, spec in zip(space.slots, arch.blocks):
        ignored = UNUSED_KNOBS.get(spec.type, {})
        genes += [0 if knob in ignored else slot.choices[knob].index(getattr(spec, knob)) for knob in space.knobs]
    return np.asarray(genes, dtype=np.int64)


def genome_to_arch(genome: Any, space: SearchSpace) -> Arch:
    """The ``Arch`` that ``genome`` encodes in ``space`` (inverse of ``arch_to_genome``)."""
    genes = np.asarray(genome).astype(np.int64).ravel()
    n = len(space.knobs)
    if genes.size != n * len(space.slots):
        raise ValueError(f"genome has {genes.size} genes; space {space.name!r} needs {n * len(space.slots)}")
    blocks = []
    for i, slot in enumerate(space.slots):
        knobs = {}
        for j, knob in enumerate(space.knobs):
            idx, allowed = int(genes[i * n + j]), slot.choices[knob]
            if not 0 <= idx < len(allowed):
                raise ValueError(f"genome slot {i} {knob}: index {idx} out of range 0..{len(allowed) - 1} "
                                 f"(allowed values {list(allowed)})")
            knobs[knob] = allowed[idx]
        blocks.append(slot.block(**knobs))
    return space.make_arch(blocks)
