"""The weight-shared supernet: option extraction is bit-exact, bad options and types fail clearly."""

from __future__ import annotations

import pytest
import torch

from blocks import build_block, get_space, init_weights
from donna.nested_supernet import OptionBank, SlotSupernet, make_slot_module

from .conftest import tiny_space


def _randomise(module: torch.nn.Module) -> None:
    init_weights(module)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
        elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
            m.bias.data.normal_()


@pytest.mark.parametrize("slot", [0, 1])
def test_extract_is_bitwise_equal_to_the_active_supernet(slot):
    space = tiny_space()
    torch.manual_seed(slot)
    net = SlotSupernet(space, slot)
    _randomise(net)
    net.eval()
    x = torch.randn(3, *space.slot_input_shape(slot))
    for spec in space.options(slot):
        net.set_active(spec)
        block = net.extract(spec)
        assert type(block).__name__ == "BlockStage" and block.spec == spec
        assert torch.equal(net(x), block(x)), spec


def test_extract_on_the_embedded_space_covers_depth_kernel_and_width():
    space = get_space("mbconv-tiny")
    torch.manual_seed(0)
    net = SlotSupernet(space, 2)
    _randomise(net)
    net.eval()
    x = torch.randn(2, *space.slot_input_shape(2))
    options = space.options(2)
    for spec in options[::7]:
        assert torch.equal(net(x, spec), net.extract(spec)(x)), spec


def test_options_share_weights():
    space = tiny_space()
    net = SlotSupernet(space, 0)
    small, large = space.options(0)[0], space.options(0)[-1]
    assert small.kernel < large.kernel and small.depth < large.depth
    with torch.no_grad():
        net.stages["ir"][0].depthwise.conv.weight.zero_()  # shared by every option
    for spec in (small, large):
        assert net.extract(spec)[0].depthwise[0].weight.abs().sum() == 0


def test_option_bank_extract_matches_its_module():
    space = tiny_space()
    bank = OptionBank(space, 1)
    _randomise(bank)
    bank.eval()
    x = torch.randn(2, *space.slot_input_shape(1))
    spec = space.options(1)[5]
    assert torch.equal(bank(x, spec), bank.extract(spec)(x))


def test_bad_option_mode_and_type_raise_clear_errors():
    space = tiny_space()
    net = SlotSupernet(space, 0)
    with pytest.raises(ValueError, match="slot 0: option"):
        net.extract(space.options(1)[0])  # other stride and width
    with pytest.raises(ValueError, match="unknown BKD mode 'shared'"):
        make_slot_module("shared", space, 0)
    fused = tiny_space(choices={**tiny_space().slots[0].choices, "type": ["fir"]})
    assert len(SlotSupernet(fused, 0).singles) == len(OptionBank(fused, 0).blocks) == fused.slots[0].num_options


@pytest.mark.parametrize("mode", ["supernet", "independent"])
def test_a_tiny_plus_slot_trains_one_step_and_extracts_what_it_runs(mode):
    """mbconv-tiny-plus slot 3: ir options nest; fir, gir and attention options are modules of their own."""
    from donna.nested_supernet import nests

    space, slot = get_space("mbconv-tiny-plus"), 3
    torch.manual_seed(0)
    module = make_slot_module(mode, space, slot)
    options = space.options(slot)
    nested = [o for o in options if nests(o)]
    if mode == "supernet":
        assert len(module.singles) == len(options) - len(nested) and set(module.stages) == {"ir"}
    picks = [nested[-1], next(o for o in options if o.type == "fir"), next(o for o in options if o.attn)]
    x, y = torch.randn(4, *space.slot_input_shape(slot)), torch.randn(4, *space.slot_output_shape(slot))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.train()
    for spec in picks:
        torch.nn.functional.mse_loss(module(x, spec), y).backward()
    opt.step()
    module.eval()
    for spec in picks:
        block = module.extract(spec)
        assert block.spec == spec and torch.equal(module(x, spec), block(x)), spec
        trained = block.state_dict()
        fresh = build_block(spec, space.slot_input_shape(slot)[0]).state_dict()
        assert trained.keys() == fresh.keys()
    after = module.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    untouched = next(o for o in options if o.type == "gir" and o not in picks)
    assert changed and not any(k.startswith(f"singles.{options.index(untouched)}.") or
                               k.startswith(f"blocks.{options.index(untouched)}.") for k in changed)


@pytest.mark.parametrize("mode", ["supernet", "independent"])
def test_teacher_initialisation_reproduces_the_teacher_block(mode):
    space = tiny_space()
    for slot in range(space.num_slots):
        options = space.options(slot)
        for spec in (options[-1], options[len(options) // 2]):  # the largest and a middle option
            torch.manual_seed(7)
            teacher_block = build_block(spec, space.slot_input_shape(slot)[0])
            _randomise(teacher_block)
            teacher_block.eval()
            module = make_slot_module(mode, space, slot)
            before = module.extract(options[0]).state_dict()
            assert module.load_teacher(teacher_block)
            module.eval()
            x = torch.randn(3, *space.slot_input_shape(slot))
            assert torch.allclose(module(x, spec), teacher_block(x), atol=1e-5), (mode, slot, spec)
            after = module.extract(options[0]).state_dict()  # the smallest option starts from the teacher too
            assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_teacher_initialisation_skips_blocks_that_are_no_option():
    space = tiny_space()
    net = SlotSupernet(space, 0)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert not net.load_teacher(torch.nn.Conv2d(3, 3, 1))
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_a_cut_teacher_of_the_space_initialises_every_slot():
    from blocks import build_model
    from blocks.teachers import cut_teacher

    space = tiny_space()
    teacher = cut_teacher(build_model(space.reference()), space).eval()
    for slot in range(space.num_slots):
        net = SlotSupernet(space, slot)
        assert net.load_teacher(teacher.blocks[slot]), slot
        net.eval()
        x = torch.randn(2, *space.slot_input_shape(slot))
        assert torch.allclose(net(x, space.options(slot)[-1]), teacher.blocks[slot](x), atol=1e-5)


def test_a_new_larger_kernel_warm_started_from_the_run_starts_as_the_run_s_kernel():
    from dataclasses import replace

    from blocks import restrict
    from donna.nested_supernet import warm_start

    space = tiny_space()  # kernels 3 and 5
    slot = space.slots[0]
    wider = replace(space, slots=(replace(slot, choices={**slot.choices, "kernel": (3, 5, 7)}), *space.slots[1:]))
    torch.manual_seed(0)
    run = SlotSupernet(space, 0)
    _randomise(run)
    new = [o for o in wider.options(0) if o.kernel == 7]
    added = SlotSupernet(restrict(wider, {0: [str(o) for o in new]}), 0)
    assert warm_start(added, run.state_dict()) > 0
    x = torch.randn(2, *space.slot_input_shape(0))
    for spec in new:  # a kernel-7 option starts from the kernel-5 one: its 5x5 weights centred, zeros around
        same = replace(spec, kernel=5)
        assert torch.allclose(added.eval().extract(spec)(x), run.eval().extract(same)(x), atol=1e-5), spec
    untouched = SlotSupernet(restrict(wider, {0: [str(o) for o in new]}), 0)
    assert not torch.allclose(untouched.eval().extract(new[0])(x), run.extract(replace(new[0], kernel=5))(x))
