"""What a network is: the architecture IR, search spaces, block modules, the builder, teacher adapters."""

from blocks.builder import ArchNet, build_block, build_head, build_model, build_stem, init_weights
from blocks.counting import count_macs, count_params, count_params_macs
from blocks.ir import ACTIVATIONS, BLOCK_TYPES, KNOBS, SCHEMA_VERSION, UNUSED_KNOBS, Arch, BlockSpec, HeadSpec
from blocks.presets import describe_arch, get_preset, list_presets, resolve_arch
from blocks.spaces import (
    OptionSubset,
    SearchSpace,
    SlotSpace,
    added_options,
    get_space,
    list_spaces,
    restrict,
    twin_option,
)

__all__ = [
    "ACTIVATIONS", "BLOCK_TYPES", "KNOBS", "SCHEMA_VERSION", "UNUSED_KNOBS", "Arch", "ArchNet", "BlockSpec", "HeadSpec",
    "OptionSubset", "SearchSpace", "SlotSpace", "added_options", "restrict", "twin_option", "build_block",
    "build_head", "build_model", "build_stem",
    "count_macs", "count_params", "count_params_macs", "get_preset", "get_space", "init_weights",
    "list_presets", "list_spaces", "describe_arch", "resolve_arch",
]
