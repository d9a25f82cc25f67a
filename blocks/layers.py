"""PyTorch block modules and the one table from block code to class."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from blocks.ir import BlockSpec

ACTIVATION_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "swish": lambda: nn.SiLU(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True),
}


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory order when it is an image batch (other tensors unchanged).

    Depthwise and 1x1 convolutions run 2-3x faster this way on CPUs (measured on the embedded space), so
    every block module keeps its weights and its inputs channels-last. The values, and the exported ONNX
    graph, are those of the usual layout.
    """
    if x.dim() == 4 and not torch.onnx.is_in_onnx_export():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def make_act(name: str) -> nn.Module:
    """A fresh activation module by name."""
    return ACTIVATION_LAYERS[name]()


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> optional activation, 'same' padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = "relu") -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(make_act(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: pooled -> 1x1 reduce -> act -> 1x1 expand -> sigmoid gate."""

    def __init__(self, channels: int, squeeze: int, act: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = make_act("relu" if act == "relu6" else act)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.expand(self.act(self.reduce(scale)))
        return x * torch.sigmoid(scale)


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand (skipped at expansion 1) -> depthwise kxk -> SE -> 1x1 project (+ residual)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: float, se: float,
                 act: str) -> None:
        super().__init__()
        hidden = int(round(cin * expansion))
        self.use_residual = stride == 1 and cin == cout
        self.expand = ConvBNAct(cin, hidden, 1, act=act) if hidden != cin else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=act)
        self.se = SqueezeExcite(hidden, max(1, int(cin * se)), act) if se > 0 else nn.Identity()
        self.project = ConvBNAct(hidden, cout, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return out + x if self.use_residual else out


class FusedInvertedResidual(nn.Module):
    """Fused MBConv: kxk expand conv -> SE -> 1x1 project (a single kxk conv at expansion 1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: float, se: float,
                 act: str) -> None:
        super().__init__()
        hidden = int(round(cin * expansion))
        self.use_residual = stride == 1 and cin == cout
        if hidden == cin:
            self.expand = ConvBNAct(cin, cout, kernel, stride, act=act)
            self.se = SqueezeExcite(cout, max(1, int(cin * se)), act) if se > 0 else nn.Identity()
            self.project = nn.Identity()
        else:
            self.expand = ConvBNAct(cin, hidden, kernel, stride, act=act)
            self.se = SqueezeExcite(hidden, max(1, int(cin * se)), act) if se > 0 else nn.Identity()
            self.project = ConvBNAct(hidden, cout, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.expand(x)))
        return out + x if self.use_residual else out


class GroupedInvertedResidual(InvertedResidual):
    """Grouped MBConv: 1x1 expand -> grouped kxk (``group_width`` channels per group) -> SE -> 1x1 project.

    Why the kxk conv is the grouped one (ResNeXt / RegNet style, DONNA's "grouped" layer type) and not the 1x1s:
    the depthwise kxk is the layer with the least work per byte, slow on GPUs and NPUs, and a grouped kxk is the
    knob between it (group width 1) and a dense kxk, so ``group_width`` trades MACs for arithmetic intensity
    while every other knob keeps its meaning. Grouping the 1x1s instead would cut the MACs that matter most on a
    CPU but needs a channel shuffle to mix groups, an op most backends run as a slow copy. The width per group,
    not the number of groups, is the knob (as in RegNet), so one value fits every layer and expansion of a slot.
    """

    extra_fields = ("group_width",)  # BlockSpec fields this layer takes beyond the shared ones

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: float, se: float,
                 act: str, group_width: int = 2) -> None:
        super().__init__(cin, cout, kernel, stride, expansion, se, act)
        hidden = int(round(cin * expansion))
        if hidden % group_width:
            raise ValueError(f"group_width {group_width} does not divide the hidden width {hidden} "
                             f"({cin} channels x expansion {expansion:g}); choose a divisor")
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden // group_width, act=act)


class LocalGlobalAttention(nn.Module):
    """Light multi-head self-attention over the feature map (MobileViT-style local-global), with a residual.

    3x3 depthwise conv (local) -> 1x1 conv + BN + act (projection) -> tokens (one per pixel) -> LayerNorm ->
    scaled dot-product attention with ``heads`` heads -> 1x1 conv + BN back to the map -> added to the input.
    Written out (no ``nn.MultiheadAttention``) so the exported ONNX graph is plain MatMul / Softmax, the same on
    every exporter and runtime. Cost grows with the square of the pixel count: meant for low-resolution slots.
    """

    def __init__(self, channels: int, heads: int, act: str) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"attention heads {heads} must divide the channels {channels}")
        self.heads = heads
        self.local = ConvBNAct(channels, channels, 3, groups=channels, act=None)
        self.project = ConvBNAct(channels, channels, 1, act=act)
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = ConvBNAct(channels, channels, 1, act=None)

    def extra_repr(self) -> str:
        return f"heads={self.heads}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.project(self.local(x)).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = self.qkv(self.norm(tokens)).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, HW, C / heads)
        weights = torch.softmax(q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5, dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)
        return x + self.out(to_channels_last(mixed))


class DepthwiseSeparable(InvertedResidual):
    """Depthwise kxk -> SE -> pointwise 1x1 (an inverted residual with expansion 1)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: float, se: float,
                 act: str) -> None:
        super().__init__(cin, cout, kernel, stride, 1, se, act)


class PlainConv(ConvBNAct):
    """A plain kxk conv -> BN -> act layer (stems); expansion and SE do not apply."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: float, se: float,
                 act: str) -> None:
        super().__init__(cin, cout, kernel, stride, act=act)


# The one table from block code to layer class; every class takes (cin, cout, kernel, stride,
# expansion, se, act) and, as keywords, the BlockSpec fields named in its ``extra_fields``.
BLOCK_LAYERS: dict[str, type[nn.Module]] = {
    "ir": InvertedResidual,
    "fir": FusedInvertedResidual,
    "gir": GroupedInvertedResidual,
    "ds": DepthwiseSeparable,
    "conv": PlainConv,
}


def layer_extras(spec: BlockSpec) -> dict[str, int]:
    """The keyword arguments that ``BLOCK_LAYERS[spec.type]`` takes beyond the shared ones."""
    return {name: getattr(spec, name) for name in getattr(BLOCK_LAYERS[spec.type], "extra_fields", ())}


class BlockStage(nn.Sequential):
    """``spec.depth`` layers of ``spec.type``: the first applies the stride and the width change; then, when
    ``spec.attn`` > 0, one ``LocalGlobalAttention`` layer (the last module)."""

    def __init__(self, spec: BlockSpec, in_channels: int) -> None:
        spec.check_input(in_channels)
        layer_cls = BLOCK_LAYERS[spec.type]
        layers = []
        for i in range(spec.depth):
            cin = in_channels if i == 0 else spec.out_channels
            stride = spec.stride if i == 0 else 1
            layers.append(layer_cls(cin, spec.out_channels, spec.kernel, stride, spec.expansion, spec.se,
                                    spec.act, **layer_extras(spec)))
        if spec.attn:
            layers.append(LocalGlobalAttention(spec.out_channels, spec.attn, spec.act))
        super().__init__(*layers)
        self.spec = spec
        self.in_channels = in_channels
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(to_channels_last(x))
