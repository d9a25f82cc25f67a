"""Weight-shared supernets, one per block slot, from which any option of the slot is a sub-network (OFA-style).

An option selects the first ``depth`` layers, the centre ``kernel x kernel`` crop of the largest depthwise
kernel, the first ``hidden`` (= expansion x input) channels and the first ``squeeze`` SE channels; the
activation is parameter-free and switched per option. ``extract(option)`` copies the selected weights into a
static ``blocks.build_block`` module whose output equals the supernet's in eval mode bit for bit.
``OptionBank`` is the same interface with one independent module per option (``BKDConfig.mode='independent'``).
Options a supernet cannot nest (block types other than ``SUPERNET_TYPES``, and blocks closed by self-attention)
keep one independent module each inside the slot's supernet: sampled like the others, but not weight-shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from blocks import BlockSpec, SearchSpace, build_block
from blocks.layers import BlockStage, InvertedResidual, to_channels_last

ACT_FNS = {"relu": F.relu, "relu6": F.relu6, "swish": F.silu, "hswish": F.hardswish}
SUPERNET_TYPES = ("ir", "ds")  # block types with a weight-shared supernet


def nests(spec: BlockSpec) -> bool:
    """Whether option ``spec`` is a sub-network of its slot's weight-shared supernet (else it is trained apart)."""
    return spec.type in SUPERNET_TYPES and spec.attn == 0


@dataclass(frozen=True)
class LayerChoice:
    """The active sub-layer of one super layer."""

    kernel: int  # depthwise kernel (centre crop of the largest)
    hidden: int  # expanded channels (first ``hidden`` of the largest)
    squeeze: int  # SE squeeze channels; 0 = no SE
    act: str  # activation name


def layer_choice(spec: BlockSpec, cin: int) -> LayerChoice:
    """The sub-layer that layer (input channels ``cin``) of option ``spec`` uses, as ``InvertedResidual``."""
    hidden = cin if spec.type == "ds" else int(round(cin * spec.expansion))
    squeeze = max(1, int(cin * spec.se)) if spec.se > 0 else 0
    return LayerChoice(spec.kernel, hidden, squeeze, spec.act)


class SuperConvBN(nn.Module):
    """Conv (no bias) + BatchNorm at their largest size, run on the first channels and the centre kernel."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, depthwise: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=cout if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.depthwise = depthwise

    def weight(self, cout: int, cin: int, kernel: int) -> torch.Tensor:
        """The selected weight: first ``cout`` (and ``cin``) channels, centre ``kernel`` crop."""
        full = self.conv.weight
        start = (full.shape[-1] - kernel) // 2
        w = full[:cout, : (1 if self.depthwise else cin), start:start + kernel, start:start + kernel]
        return w.contiguous()

    def forward(self, x: torch.Tensor, cout: int, kernel: int) -> torch.Tensor:
        w = self.weight(cout, x.shape[1], kernel)
        y = F.conv2d(x, w, None, self.conv.stride, kernel // 2, 1, cout if self.depthwise else 1)
        bn = self.bn
        if self.training:
            bn.num_batches_tracked.add_(1)
        return F.batch_norm(y, bn.running_mean[:cout], bn.running_var[:cout], bn.weight[:cout], bn.bias[:cout],
                            self.training, bn.momentum, bn.eps)

    @torch.no_grad()
    def copy_from(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        """Writes a static ``conv`` and ``bn`` into the slice ``weight`` selects (the inverse of ``copy_to``)."""
        kernel, full = conv.kernel_size[0], self.conv.weight
        start = (full.shape[-1] - kernel) // 2
        full[:conv.out_channels, : conv.weight.shape[1], start:start + kernel, start:start + kernel] = conv.weight
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(self.bn, name)[:conv.out_channels] = getattr(bn, name)

    @torch.no_grad()
    def copy_to(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, kernel: int) -> None:
        """Copies the selected weights into a static ``conv`` and ``bn``."""
        conv.weight.copy_(self.weight(conv.out_channels, conv.in_channels, kernel))
        cout = conv.out_channels
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).copy_(getattr(self.bn, name)[:cout])
        bn.num_batches_tracked.copy_(self.bn.num_batches_tracked)


class SuperInvertedResidual(nn.Module):
    """The largest inverted residual of one layer position; ``forward(x, choice)`` runs a sub-layer."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, hidden: int, squeeze: int) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.expand = SuperConvBN(cin, hidden, 1) if hidden != cin else None
        self.depthwise = SuperConvBN(hidden, hidden, kernel, stride, depthwise=True)
        self.se_reduce = nn.Conv2d(hidden, squeeze, 1) if squeeze else None
        self.se_expand = nn.Conv2d(squeeze, hidden, 1) if squeeze else None
        self.project = SuperConvBN(hidden, cout, 1)

    def _se(self, h: torch.Tensor, choice: LayerChoice) -> torch.Tensor:
        hid, sq = choice.hidden, choice.squeeze
        scale = h.mean((2, 3), keepdim=True)
        scale = F.conv2d(scale, self.se_reduce.weight[:sq, :hid].contiguous(), self.se_reduce.bias[:sq])
        scale = ACT_FNS["relu" if choice.act == "relu6" else choice.act](scale)
        scale = F.conv2d(scale, self.se_expand.weight[:hid, :sq].contiguous(), self.se_expand.bias[:hid])
        return h * torch.sigmoid(scale)

    def forward(self, x: torch.Tensor, choice: LayerChoice) -> torch.Tensor:
        act = ACT_FNS[choice.act]
        h = act(self.expand(x, choice.hidden, 1)) if choice.hidden != self.cin else x
        h = act(self.depthwise(h, choice.hidden, choice.kernel))
        if choice.squeeze:
            h = self._se(h, choice)
        out = self.project(h, self.cout, 1)
        return out + x if self.stride == 1 and self.cin == self.cout else out

    @torch.no_grad()
    def copy_to(self, layer: InvertedResidual, choice: LayerChoice) -> None:
        """Copies the weights of sub-layer ``choice`` into a static ``InvertedResidual``."""
        if choice.hidden != self.cin:
            self.expand.copy_to(layer.expand[0], layer.expand[1], 1)
        self.depthwise.copy_to(layer.depthwise[0], layer.depthwise[1], choice.kernel)
        if choice.squeeze:
            hid, sq = choice.hidden, choice.squeeze
            layer.se.reduce.weight.copy_(self.se_reduce.weight[:sq, :hid])
            layer.se.reduce.bias.copy_(self.se_reduce.bias[:sq])
            layer.se.expand.weight.copy_(self.se_expand.weight[:hid, :sq])
            layer.se.expand.bias.copy_(self.se_expand.bias[:hid])
        self.project.copy_to(layer.project[0], layer.project[1], 1)

    @torch.no_grad()
    def copy_from(self, layer: InvertedResidual, choice: LayerChoice) -> None:
        """Writes a static ``InvertedResidual`` into the slice of sub-layer ``choice`` (inverse of ``copy_to``)."""
        if choice.hidden != self.cin:
            self.expand.copy_from(layer.expand[0], layer.expand[1])
        self.depthwise.copy_from(layer.depthwise[0], layer.depthwise[1])
        if choice.squeeze:
            hid, sq = choice.hidden, choice.squeeze
            self.se_reduce.weight[:sq, :hid] = layer.se.reduce.weight
            self.se_reduce.bias[:sq] = layer.se.reduce.bias
            self.se_expand.weight[:hid, :sq] = layer.se.expand.weight
            self.se_expand.bias[:hid] = layer.se.expand.bias
        self.project.copy_from(layer.project[0], layer.project[1])


def _check_option(options: list[BlockSpec], spec: BlockSpec, slot: int) -> None:
    if spec not in options:
        raise ValueError(f"slot {slot}: option {spec} is not in this slot's choices "
                         f"(e.g. {options[0]} ... {options[-1]})")


def teacher_stage(block: nn.Module) -> nn.Module:
    """The ``BlockStage`` inside a teacher's slot module (``cut_teacher`` wraps each slot in a Sequential)."""
    while isinstance(block, nn.Sequential) and not isinstance(block, BlockStage) and len(block) == 1:
        block = block[0]
    return block


class _SlotModule(nn.Module):
    """What both slot modules share: the slot's options and the active option ``forward`` runs."""

    def __init__(self, space: SearchSpace, slot: int) -> None:
        super().__init__()
        self.slot, self.options = slot, space.options(slot)
        self.in_channels = space.slot_input_shape(slot)[0]
        self.active: BlockSpec | None = None

    def set_active(self, spec: BlockSpec) -> None:
        """Makes ``spec`` the option ``forward`` runs when none is passed."""
        _check_option(self.options, spec, self.slot)
        self.active = spec

    def teacher_option(self, block: nn.Module) -> BlockSpec | None:
        """The option ``block`` (a teacher's slot module) is built as, or None when it is none of them."""
        block = teacher_stage(block)
        spec = getattr(block, "spec", None)
        return spec if isinstance(block, BlockStage) and spec in self.options else None

    def _option(self, spec: BlockSpec | None) -> BlockSpec:
        spec = spec or self.active
        if spec is None:
            raise ValueError("no active option: pass one to forward() or call set_active() first")
        return spec


class SlotSupernet(_SlotModule):
    """One weight-shared supernet for every option of slot ``slot`` of ``space`` (one stage per block type).

    Options that cannot nest (see ``nests``) each get an independent module in ``singles`` (keyed by the
    option's index in ``options``), trained when sampled, as ``OptionBank`` trains every option.

    Args:
        space: the search space.
        slot: the block slot index.
    """

    def __init__(self, space: SearchSpace, slot: int) -> None:
        super().__init__(space, slot)
        nested = [o for o in self.options if nests(o)]
        self.stages = nn.ModuleDict({t: self._stage(t, nested) for t in dict.fromkeys(o.type for o in nested)})
        self.singles = nn.ModuleDict({str(i): build_block(o, self.in_channels)
                                      for i, o in enumerate(self.options) if not nests(o)})
        self.to(memory_format=torch.channels_last)  # 2x faster convolutions on CPU (blocks.layers.to_channels_last)

    def _single(self, spec: BlockSpec) -> BlockStage:
        return self.singles[str(self.options.index(spec))]

    def _stage(self, block_type: str, nested: list[BlockSpec]) -> nn.ModuleList:
        opts = [o for o in nested if o.type == block_type]
        layers, first = [], opts[0]
        for i in range(max(o.depth for o in opts)):
            cin = self.in_channels if i == 0 else first.out_channels
            choices = [layer_choice(o, cin) for o in opts]
            layers.append(SuperInvertedResidual(cin, first.out_channels, first.stride if i == 0 else 1,
                                                max(c.kernel for c in choices), max(c.hidden for c in choices),
                                                max(c.squeeze for c in choices)))
        return nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, spec: BlockSpec | None = None) -> torch.Tensor:
        spec, x = self._option(spec), to_channels_last(x)
        if not nests(spec):
            return self._single(spec)(x)
        cin = self.in_channels
        for layer in self.stages[spec.type][: spec.depth]:
            x = layer(x, layer_choice(spec, cin))
            cin = spec.out_channels
        return x

    @torch.no_grad()
    def load_teacher(self, block: nn.Module) -> bool:
        """Starts from a teacher's slot module when it is one of the options (OFA starts shrinking from the
        trained full network): its weights fill that option's slice, so the option reproduces the teacher's
        block and every smaller option begins from its centre kernels and first channels. False when ``block``
        is not an option of this slot (e.g. a torchvision teacher); nothing changes then."""
        block = teacher_stage(block)
        spec = self.teacher_option(block)
        if spec is None:
            return False
        if not nests(spec):
            self._single(spec).load_state_dict(block.state_dict())
            return True
        cin = self.in_channels
        for layer, sup in zip(block, self.stages[spec.type]):
            sup.copy_from(layer, layer_choice(spec, cin))
            cin = spec.out_channels
        return True

    def extract(self, spec: BlockSpec) -> BlockStage:
        """A static ``build_block(spec, in_channels)`` module holding this option's shared weights (eval mode)."""
        _check_option(self.options, spec, self.slot)
        block = build_block(spec, self.in_channels)
        if not nests(spec):
            block.load_state_dict(self._single(spec).state_dict())
            return block.eval()
        cin = self.in_channels
        for layer, sup in zip(block, self.stages[spec.type]):
            sup.copy_to(layer, layer_choice(spec, cin))
            cin = spec.out_channels
        return block.eval()


class OptionBank(_SlotModule):
    """Every option of one slot as its own module (independent training); same interface as ``SlotSupernet``."""

    def __init__(self, space: SearchSpace, slot: int) -> None:
        super().__init__(space, slot)
        self.space = space
        self.index = {o: i for i, o in enumerate(self.options)}
        self.blocks = nn.ModuleList(build_block(o, self.in_channels) for o in self.options)

    def forward(self, x: torch.Tensor, spec: BlockSpec | None = None) -> torch.Tensor:
        spec = self._option(spec)
        return self.blocks[self.index[spec]](x)

    @torch.no_grad()
    def load_teacher(self, block: nn.Module) -> bool:
        """Every option starts from the teacher's block as in ``SlotSupernet.load_teacher`` (the same slices,
        then trained apart), so the two modes differ only in weight sharing. False when ``block`` is no option."""
        with torch.random.fork_rng():  # the parts of the slices the teacher does not fill: seeded, not global
            torch.manual_seed(self.slot)
            shared = SlotSupernet(self.space, self.slot)
        if not shared.load_teacher(block):
            return False
        for spec, module in zip(self.options, self.blocks):
            if nests(spec) and spec.type in shared.stages:
                module.load_state_dict(shared.extract(spec).state_dict())
        return True

    def extract(self, spec: BlockSpec) -> BlockStage:
        """A static copy of option ``spec``'s module (eval mode)."""
        _check_option(self.options, spec, self.slot)
        block = build_block(spec, self.in_channels)
        block.load_state_dict(self.blocks[self.index[spec]].state_dict())
        return block.eval()


SLOT_MODULES: dict[str, type[nn.Module]] = {"supernet": SlotSupernet, "independent": OptionBank}


def make_slot_module(mode: str, space: SearchSpace, slot: int) -> SlotSupernet | OptionBank:
    """The trainable module of ``slot`` for BKD ``mode`` (``supernet`` or ``independent``)."""
    if mode not in SLOT_MODULES:
        raise ValueError(f"unknown BKD mode {mode!r}; known modes: {', '.join(SLOT_MODULES)}")
    return SLOT_MODULES[mode](space, slot)


EXTENDED = "extended"  # the mode of a slot file ``donna extend`` composed from two trained slot modules


class ExtendedSlot(_SlotModule):
    """A slot of an extended space: the run's trained slot module for the options it had and the module trained
    by ``donna extend`` for the options it added, each option served by the part that trained it (so an option
    already distilled keeps its weights exactly). Same interface as ``SlotSupernet`` for extraction.

    Args:
        space: the extended space.
        slot: the block slot index.
        parts: the trained slot modules.
        serves: per part, the option strings it serves (default: all its options; a part trained with control
            options, ``donna extend``'s twins, serves only the others). Together they are the slot's options, each
            served once.
    """

    def __init__(self, space: SearchSpace, slot: int, parts: list[nn.Module],
                 serves: list[list[str] | None] | None = None) -> None:
        super().__init__(space, slot)
        self.parts = nn.ModuleList(parts)
        serves = serves or [None] * len(parts)
        served = [[o for o in part.options if names is None or str(o) in set(names)]
                  for part, names in zip(parts, serves)]
        self.owner = {spec: k for k, options in enumerate(served) for spec in options}
        if sorted(map(str, self.owner)) != sorted(map(str, self.options)) or \
                sum(map(len, served)) != len(self.options):
            missing = sorted(set(map(str, self.options)) - set(map(str, self.owner)))
            raise ValueError(f"slot {slot}: the parts do not serve every option of the slot exactly once"
                             + (f" ({missing[0]} is served by none)" if missing else " (one is served twice)"))

    def forward(self, x: torch.Tensor, spec: BlockSpec | None = None) -> torch.Tensor:
        spec = self._option(spec)
        return self.parts[self.owner[spec]](x, spec)

    def extract(self, spec: BlockSpec) -> BlockStage:
        """A static module of option ``spec`` with the weights of the part that trained it (eval mode)."""
        _check_option(self.options, spec, self.slot)
        return self.parts[self.owner[spec]].extract(spec)


def load_slot_module(ckpt: dict, space: SearchSpace, slot: int, root: Path | None = None) -> nn.Module:
    """The slot module a library file holds (``library/slotN.pt``), its weights loaded: a BKD mode's module, or,
    for ``mode == "extended"``, an ``ExtendedSlot`` of the parts the file lists: each part's mode, options, the
    options it serves (``serves``, default all) and ``file``, a trained slot file (relative to ``root``, the
    folder of the file read) whose ``fingerprint`` must still be the one recorded.

    Raises:
        ValueError: a part's file is missing or was trained again since (naming the fix).
    """
    from blocks import restrict

    if ckpt["mode"] != EXTENDED:
        module = make_slot_module(ckpt["mode"], space, slot)
        module.load_state_dict(ckpt["state_dict"])
        return module
    parts = []
    for part in ckpt["parts"]:
        path = Path(root or ".") / part["file"]
        try:
            trained = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"slot {slot}: {path}, a part of this extended library, is missing; delete the "
                             "extension's folder (extend/<space>/) and run `donna extend` again") from None
        if trained.get("fingerprint") != part["fingerprint"]:
            raise ValueError(f"slot {slot}: {path} was trained again since this extended library was made; delete "
                             "the extension's folder (extend/<space>/) and run `donna extend` again")
        module = make_slot_module(part["mode"], restrict(space, {slot: part["options"]}), slot)
        module.load_state_dict(trained["state_dict"])
        parts.append(module)
    return ExtendedSlot(space, slot, parts, [part.get("serves") for part in ckpt["parts"]])


@torch.no_grad()
def warm_start(module: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Fills ``module`` from another slot module's weights (``state``, the run's trained slot): every tensor both
    name gets their overlap, channels from the first and kernels centred, which are the slices nested options
    take (an option the run lacks starts from what its neighbours learnt, as Once-for-All's shrinking starts
    from the trained network). A kernel larger than the run's gets the run's in its centre and zeros around it,
    so it starts as the smaller kernel. Options that do not nest (``singles``, one module per option index) are
    left as they are. Returns how many tensors were filled.
    """
    own, filled = module.state_dict(), 0
    for key, target in own.items():
        source = None if key.startswith("singles.") else state.get(key)  # singles are keyed by option index
        if source is None or source.ndim != target.ndim or source.ndim == 0 or not target.is_floating_point():
            continue
        outer, inner = [], []
        for d, (a, b) in enumerate(zip(target.shape, source.shape)):
            m = min(a, b)
            centred = target.ndim == 4 and d >= 2
            outer.append(slice((a - m) // 2, (a - m) // 2 + m) if centred else slice(0, m))
            inner.append(slice((b - m) // 2, (b - m) // 2 + m) if centred else slice(0, m))
        if target.ndim == 4 and any(a > b for a, b in zip(target.shape[2:], source.shape[2:])):
            target[outer[0], outer[1]].zero_()  # the shared channels' whole kernels: zeros around the copy
        target[tuple(outer)].copy_(source[tuple(inner)])
        filled += 1
    module.load_state_dict(own)
    return filled
