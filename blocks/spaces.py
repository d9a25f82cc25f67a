"""Search spaces as data: fixed stem and head, per-slot stride, width and choices of every knob."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from blocks.convert import arch_to_genome, genome_to_arch
from blocks.ir import KNOBS, OPTIONAL_KNOBS, UNUSED_KNOBS, Arch, BlockSpec, HeadSpec, _check_keys


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv with odd kernel and ``stride``."""
    return (size + stride - 1) // stride


@dataclass(frozen=True)
class SlotSpace:
    """One searchable block slot: fixed stride and output channels, a list of values per knob."""

    stride: int
    out_channels: int
    choices: dict[str, tuple] = field(hash=False)

    @property
    def knobs(self) -> tuple[str, ...]:
        """The knobs this slot searches, in genome order: ``KNOBS``, then the optional knobs it names."""
        return KNOBS + tuple(k for k in OPTIONAL_KNOBS if k in self.choices)

    def block(self, **knobs: Any) -> BlockSpec:
        """The ``BlockSpec`` of this slot with the given knob values.

        A knob the block's type ignores takes its neutral value (``UNUSED_KNOBS``); the slot offers such a knob
        one value only (checked at load), so every combination of choices is one distinct network.
        """
        knobs.update(UNUSED_KNOBS.get(knobs.get("type"), {}))
        return BlockSpec(stride=self.stride, out_channels=self.out_channels, **knobs)

    @property
    def num_options(self) -> int:
        """Number of distinct options in this slot."""
        return math.prod(len(v) for v in self.choices.values())


@dataclass(frozen=True)
class SearchSpace:
    """A DONNA-style block space: ``stem -> slot_0 -> ... -> slot_{n-1} -> head``."""

    name: str
    input_size: int
    in_channels: int
    num_classes: int
    stem: tuple[BlockSpec, ...]
    slots: tuple[SlotSpace, ...]
    head: HeadSpec
    description: str = ""

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def num_slots(self) -> int:
        return len(self.slots)

    @property
    def knobs(self) -> tuple[str, ...]:
        """The knobs of every slot's genes, in genome order (``KNOBS`` plus the optional knobs the space names)."""
        return self.slots[0].knobs

    @cached_property
    def _shapes(self) -> list[tuple[int, int, int]]:
        size, channels = self.input_size, self.in_channels
        for spec in self.stem:
            size, channels = conv_out(size, spec.stride), spec.out_channels
        shapes = [(channels, size, size)]
        for slot in self.slots:
            size = conv_out(size, slot.stride)
            shapes.append((slot.out_channels, size, size))
        return shapes

    def stem_output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) leaving the stem, i.e. entering slot 0."""
        return self._shapes[0]

    def slot_input_shape(self, i: int) -> tuple[int, int, int]:
        """(C, H, W) entering slot ``i``."""
        self._check_slot(i)
        return self._shapes[i]

    def slot_output_shape(self, i: int) -> tuple[int, int, int]:
        """(C, H, W) leaving slot ``i``."""
        self._check_slot(i)
        return self._shapes[i + 1]

    def head_input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) entering the head."""
        return self._shapes[-1]

    def _check_slot(self, i: int) -> None:
        if not 0 <= i < self.num_slots:
            raise ValueError(f"slot {i} does not exist; space {self.name!r} has slots 0..{self.num_slots - 1}")

    # ---- enumeration --------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of architectures in the space."""
        return math.prod(slot.num_options for slot in self.slots)

    def options(self, i: int) -> list[BlockSpec]:
        """Every option of slot ``i`` in genome order (the last knob varies fastest)."""
        self._check_slot(i)
        slot, knobs = self.slots[i], self.knobs
        grids = np.indices([len(slot.choices[k]) for k in knobs]).reshape(len(knobs), -1).T
        return [slot.block(**{k: slot.choices[k][j] for k, j in zip(knobs, row)}) for row in grids]

    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive integer bounds (xl, xu) of every gene."""
        upper = [len(slot.choices[k]) - 1 for slot in self.slots for k in self.knobs]
        return np.zeros(len(upper), dtype=np.int64), np.asarray(upper, dtype=np.int64)

    # ---- conversions --------------------------------------------------------------------------
    def make_arch(self, blocks: list[BlockSpec] | tuple[BlockSpec, ...]) -> Arch:
        """The ``Arch`` of this space with the given searchable blocks."""
        return Arch(input_size=self.input_size, in_channels=self.in_channels, num_classes=self.num_classes,
                    stem=self.stem, blocks=tuple(blocks), head=self.head, space=self.name)

    def encode(self, arch: Arch) -> np.ndarray:
        """The integer genome of ``arch``."""
        return arch_to_genome(arch, self)

    def decode(self, genome: Any) -> Arch:
        """The ``Arch`` of an integer genome."""
        return genome_to_arch(genome, self)

    # ---- sampling -----------------------------------------------------------------------------
    def sample(self, seed: int | np.random.Generator | None = None) -> Arch:
        """A uniformly random member (each knob of each slot drawn uniformly)."""
        rng = np.random.default_rng(seed)
        _, upper = self.genome_bounds()
        return self.decode(rng.integers(0, upper + 1))

    def sample_many(self, n: int, seed: int | None = None) -> list[Arch]:
        """``n`` uniformly random members from one seeded generator."""
        rng = np.random.default_rng(seed)
        return [self.sample(rng) for _ in range(n)]

    def mutate(self, arch: Arch, prob: float = 0.1, seed: int | np.random.Generator | None = None) -> Arch:
        """Redraws each gene uniformly with probability ``prob``."""
        rng = np.random.default_rng(seed)
        genome = self.encode(arch)
        _, upper = self.genome_bounds()
        redraw = rng.random(genome.size) < prob
        genome[redraw] = rng.integers(0, upper + 1)[redraw]
        return self.decode(genome).with_provenance(arch.provenance)

    def reference(self) -> Arch:
        """The largest member (the default teacher): the last value of every knob of ``KNOBS`` and the first value
        of every optional knob (``OPTIONAL_KNOBS``: list the plain block first, so the teacher stays the plain
        DONNA reference block and the extensions are options around it)."""
        return self.make_arch([slot.block(**{k: slot.choices[k][0 if k in OPTIONAL_KNOBS else -1]
                                             for k in self.knobs}) for slot in self.slots])

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, arch: Arch) -> Arch:
        """Raises ``ValueError`` naming the field and the allowed values if ``arch`` is not a member."""
        where = f"space {self.name!r}"
        for name in ("input_size", "in_channels", "num_classes", "stem", "head"):
            if getattr(arch, name) != getattr(self, name):
                raise ValueError(f"{name} {getattr(arch, name)!r} does not match {where}, "
                                 f"which has {getattr(self, name)!r}")
        if len(arch.blocks) != self.num_slots:
            raise ValueError(f"architecture has {len(arch.blocks)} blocks; {where} has {self.num_slots} slots")
        for i, (slot, spec) in enumerate(zip(self.slots, arch.blocks)):
            for name in ("stride", "out_channels"):
                if getattr(spec, name) != getattr(slot, name):
                    raise ValueError(f"slot {i}: {name} {getattr(spec, name)} not allowed; {where} "
                                     f"fixes it to {getattr(slot, name)}")
            ignored = UNUSED_KNOBS.get(spec.type, {})
            for knob, neutral in OPTIONAL_KNOBS.items():
                if knob not in self.knobs and getattr(spec, knob) != neutral:
                    raise ValueError(f"slot {i}: {knob} {getattr(spec, knob)!r} not allowed; {where} does not "
                                     f"search {knob} (it must be {neutral})")
            for knob in self.knobs:
                if knob not in ignored and getattr(spec, knob) not in slot.choices[knob]:
                    raise ValueError(f"slot {i}: {knob} {getattr(spec, knob)!r} not in "
                                     f"{list(slot.choices[knob])} ({where})")
        return arch

    def with_classes(self, num_classes: int) -> SearchSpace:
        """The same space for a data set with ``num_classes`` classes."""
        return replace(self, num_classes=num_classes)

    # ---- data form ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> SearchSpace:
        """Reads a space from its JSON form (see ``blocks/spaces.json``)."""
        keys = ("description", "input_size", "in_channels", "num_classes", "stem", "head", "choices", "slots")
        _check_keys(data, keys, f"space {name!r}")
        missing = [k for k in ("input_size", "num_classes", "stem", "head", "slots") if k not in data]
        if missing:
            raise ValueError(f"space {name!r}: missing key {missing[0]!r}; a space needs input_size, num_classes, "
                             "stem, head, slots (and choices); see blocks/spaces.json")
        defaults = data.get("choices", {})
        named = [set(raw.get("choices", {})) for raw in data["slots"] if isinstance(raw, dict)]
        optional = [k for k in OPTIONAL_KNOBS if k in defaults or any(k in n for n in named)]
        slots = []
        for i, raw in enumerate(data["slots"]):
            _check_keys(raw, ("stride", "out_channels", "choices"), f"space {name!r} slot {i}")
            if "stride" not in raw or "out_channels" not in raw:
                raise ValueError(f"space {name!r} slot {i}: needs stride and out_channels")
            choices = {**{k: [OPTIONAL_KNOBS[k]] for k in optional}, **defaults, **raw.get("choices", {})}
            missing = [k for k in KNOBS if k not in choices]
            if missing:
                raise ValueError(f"space {name!r} slot {i}: no choices for knob {missing[0]!r}")
            _check_keys(choices, (*KNOBS, *OPTIONAL_KNOBS), f"space {name!r} slot {i} choices")
            normalised = {k: tuple(_normalise(k, v) for v in choices[k]) for k in (*KNOBS, *optional)}
            empty = [k for k, values in normalised.items() if not values]
            if empty:
                raise ValueError(f"space {name!r} slot {i}: knob {empty[0]!r} offers no value; list at least one")
            slots.append(SlotSpace(stride=raw["stride"], out_channels=raw["out_channels"], choices=normalised))
            _check_unused_knobs(normalised, f"space {name!r} slot {i}")
        space = cls(name=name, input_size=data["input_size"], in_channels=data.get("in_channels", 3),
                    num_classes=data["num_classes"],
                    stem=tuple(BlockSpec.from_dict(b, f"space {name!r} stem") for b in data["stem"]),
                    slots=tuple(slots), head=HeadSpec.from_dict(data["head"]),
                    description=data.get("description", ""))
        for i in range(space.num_slots):  # every option is valid and takes the slot's input channels
            try:
                for spec in space.options(i):
                    spec.check_input(space.slot_input_shape(i)[0])
            except ValueError as err:
                raise ValueError(f"space {name!r} slot {i}: {err}") from None
        return space


@dataclass(frozen=True)
class OptionSubset(SearchSpace):
    """A space whose slots offer only some of their options, in a given order (``restrict``): what ``donna
    extend`` distils and scores when it trains only the options a space gained. Shapes, stem and head are the
    space's; sampling and genomes are not defined on it."""

    only: tuple[tuple[str, ...] | None, ...] = ()  # per slot, the option strings kept (None: every option)

    def options(self, i: int) -> list[BlockSpec]:
        """Slot ``i``'s kept options, in the order ``only`` lists them."""
        every = super().options(i)
        keep = self.only[i] if i < len(self.only) else None
        if keep is None:
            return every
        by_name = {str(o): o for o in every}
        missing = [name for name in keep if name not in by_name]
        if missing:
            raise ValueError(f"slot {i}: option {missing[0]} is not in space {self.name!r}")
        return [by_name[name] for name in keep]


def restrict(space: SearchSpace, only: dict[int, list[str]]) -> OptionSubset:
    """``space`` with slot ``i`` offering only the options ``only[i]`` (slots not named keep every option)."""
    base = {f.name: getattr(space, f.name) for f in fields(SearchSpace)}
    return OptionSubset(**base, only=tuple(tuple(only[i]) if i in only else None for i in range(space.num_slots)))


def twin_option(base: SearchSpace, slot: int, spec: BlockSpec) -> BlockSpec:
    """The option of ``base``'s slot nearest to ``spec`` (an option of a space that extends ``base``): every knob
    value the slot does not offer becomes the nearest one it does (numbers; the smaller on a tie) or its reference
    value (the last of a knob of ``KNOBS``, the first of an optional knob), as ``SearchSpace.reference`` picks.
    ``donna extend`` trains these twins beside the new options as controls of the extra training."""
    choices, knobs = base.slots[slot].choices, {}
    for knob in base.knobs:
        value, allowed = getattr(spec, knob), base.slots[slot].choices[knob]
        numeric = isinstance(value, (int, float)) and all(isinstance(a, (int, float)) for a in allowed)
        if value in allowed:
            knobs[knob] = value
        elif numeric:
            knobs[knob] = min(allowed, key=lambda a: (abs(a - value), a))
        else:
            knobs[knob] = choices[knob][0 if knob in OPTIONAL_KNOBS else -1]
    return base.slots[slot].block(**knobs)


def added_options(base: SearchSpace, new: SearchSpace) -> list[list[BlockSpec]]:
    """Per slot, the options ``new`` offers that ``base`` does not, in ``new``'s order.

    Raises:
        ValueError: ``new`` does not contain ``base`` (naming what differs and the fix): another input, stem,
            head, slot count, stride or width, or a slot that lost an option.
    """
    where = f"space {new.name!r} does not extend {base.name!r}"
    for name in ("input_size", "in_channels", "stem", "head"):
        if getattr(base, name) != getattr(new, name):
            raise ValueError(f"{where}: its {name} is {getattr(new, name)!r}, the run's is {getattr(base, name)!r}; "
                             "an extension keeps the input, stem and head and only adds options")
    if new.num_slots != base.num_slots:
        raise ValueError(f"{where}: {new.num_slots} slots against {base.num_slots}; an extension keeps the slots")
    added = []
    for i, (a, b) in enumerate(zip(base.slots, new.slots)):
        if (a.stride, a.out_channels) != (b.stride, b.out_channels):
            raise ValueError(f"{where}: slot {i} has stride {b.stride} and {b.out_channels} channels, the run's "
                             f"{a.stride} and {a.out_channels}; an extension keeps every slot's shapes")
        old = {str(o) for o in base.options(i)}
        new_options = new.options(i)
        lost = old - {str(o) for o in new_options}
        if lost:
            raise ValueError(f"{where}: slot {i} no longer offers {sorted(lost)[0]}; keep every choice of the run's "
                             "space and add values (e.g. a knob's list gains a value)")
        added.append([o for o in new_options if str(o) not in old])
    if not any(added):
        raise ValueError(f"space {new.name!r} adds no option to {base.name!r}; add values to a knob's choices "
                         "(e.g. \"type\": [\"fir\", \"ir\"])")
    return added


def _check_unused_knobs(choices: dict[str, tuple], where: str) -> None:
    """Refuses choices that pair a block type with several values of a knob it ignores (two genomes, one network).

    One value is allowed: the types that use the knob take it, the others their neutral value (``SlotSpace.block``).
    """
    for block_type in choices["type"]:
        for knob, neutral in UNUSED_KNOBS.get(block_type, {}).items():
            if knob in choices and len(choices[knob]) > 1:
                raise ValueError(f"{where}: type {block_type!r} ignores {knob}, but the {knob} choices are "
                                 f"{list(choices[knob])}; give {block_type!r} a slot whose {knob} choices are "
                                 f"one value, e.g. [{neutral}] (blocks.ir.UNUSED_KNOBS)")


def _normalise(knob: str, value: Any) -> Any:
    if knob == "se":
        return float(value)
    if knob == "expansion" and float(value).is_integer():
        return int(value)
    return value


def _builtin_spaces() -> dict[str, dict[str, Any]]:
    return json.loads(resources.files("blocks").joinpath("spaces.json").read_text())


def list_spaces() -> list[str]:
    """Names of the spaces shipped with the package."""
    return sorted(_builtin_spaces())


def get_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name, or a space from a JSON file ``{"name": {...}}`` or ``{...}``."""
    builtin = _builtin_spaces()
    if str(name_or_path) in builtin:
        return SearchSpace.from_dict(str(name_or_path), builtin[str(name_or_path)])
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if "slots" in data:
            return SearchSpace.from_dict(path.stem, data)
        if len(data) == 1:
            (name, body), = data.items()
            return SearchSpace.from_dict(name, body)
    raise ValueError(f"unknown search space {str(name_or_path)!r}; known spaces: {', '.join(builtin)} "
                     "(or pass a path to a space JSON file)")
