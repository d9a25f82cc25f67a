"""On the embedded default space: both searchers emit IRs that validate, build, export to ONNX and train."""

import onnx
import pytest
import torch
import torch.nn.functional as F

import baselines  # noqa: F401  (registers the searchers)
from baselines.memory import saved_bytes
from baselines.pcdarts import PCDartsNet
from blocks import Arch, build_model, get_space
from search import create_searcher

STEPS = {
    "pc-darts": {"epochs": 1, "warmup_epochs": 0, "batch_size": 4, "max_steps_per_epoch": 1},
    "dso-nas": {"pretrain_epochs": 1, "search_epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1,
                "sparsify_stages": 2},  # the stages' path is tested on the tiny space (test_sparsify.py)
}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_emitted_ir_validates_builds_exports_and_finetunes(name, digits32, tmp_path):
    space = get_space("mbconv-tiny")
    arch = create_searcher(name, data=digits32, **STEPS[name]).search(space, progress=False).archs[0]
    space.validate(arch)
    arch.to_json(tmp_path / "arch.json")
    again = Arch.from_json(tmp_path / "arch.json")
    assert again == arch and again.provenance["method"] == name

    torch.manual_seed(0)
    model = build_model(again)
    x, y = digits32.tensors[0][:16], digits32.tensors[1][:16]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # finetune stand-in: a few SGD steps
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]

    model.eval()
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x[:1],), str(path), dynamo=False, input_names=["input"], output_names=["logits"])
    onnx.checker.check_model(onnx.load(str(path)))


def test_partial_channels_k4_keep_at_most_035_of_k1_activation_memory():
    space = get_space("mbconv-tiny")
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    k1, k4 = PCDartsNet(space, 1, 1e-3), PCDartsNet(space, 4, 1e-3)
    full, partial = saved_bytes(k1, k1.net, x, y), saved_bytes(k4, k4.net, x, y)
    assert partial.partial_layers <= 0.35 * full.partial_layers
    assert partial.total < full.total
