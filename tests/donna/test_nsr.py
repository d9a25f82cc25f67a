"""NSR: zero for an exact copy, one for the teacher mean, lower after BKD; the table and its resumption."""

from __future__ import annotations

import copy

import pytest
import torch

from blocks import build_block, count_macs
from donna.bkd import compute_features, run_bkd
from donna.config import BKDConfig
from donna.nsr import arch_nsr, load_nsr_table, nsr, score_library

from .conftest import SCORE


class ConstantBlock(torch.nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(len(x), *self.value.shape[1:])


def test_nsr_is_zero_for_an_exact_copy_and_one_for_the_teacher_mean(built, digits16):
    teacher = built["teacher"]
    feats = compute_features(teacher, digits16.val, "cpu")
    for slot in range(len(teacher.blocks)):
        x, y = feats[slot], feats[slot + 1]
        assert nsr(copy.deepcopy(teacher.blocks[slot]), x, y, batch_size=256) == 0.0  # same batches: bit-exact
        mean = y.double().mean().float().view(1, 1, 1, 1).expand(1, *y.shape[1:])
        assert nsr(ConstantBlock(mean), x, y) == pytest.approx(1.0, abs=1e-5)
        assert nsr(ConstantBlock(torch.zeros(1, *y.shape[1:])), x, y) > 1.0  # worse than the mean


def test_nsr_goes_down_as_bkd_trains(built, space, digits16, tmp_path):
    untrained = tmp_path / "untrained"
    teacher = built["teacher"]
    run_bkd(BKDConfig(epochs=0), space, teacher, digits16, untrained, progress=False)
    before = score_library(SCORE, space, teacher, digits16, untrained, progress=False)
    after = built["table"]
    for slot in range(space.num_slots):
        b, a = before[before.slot == slot].nsr, after[after.slot == slot].nsr
        assert a.mean() < 0.8 * b.mean(), slot
        assert (a.values < b.values).mean() > 0.9  # nearly every option improves
    history = [(built["workdir"] / f"library/slot{s}.json").read_text() for s in range(space.num_slots)]
    assert all('"train_nsr"' in h for h in history)


def test_table_has_every_option_with_params_and_macs(built, space):
    table = load_nsr_table(built["workdir"])
    assert list(table.columns) == ["slot", "option", "nsr", "params", "macs"]
    assert len(table) == sum(len(space.options(s)) for s in range(space.num_slots))
    assert table.option.tolist()[: len(space.options(0))] == [str(o) for o in space.options(0)]
    row = table.iloc[-1]
    block = build_block(space.options(1)[-1], space.slot_input_shape(1)[0])
    assert row.params == sum(p.numel() for p in block.parameters())
    assert row.macs == count_macs(block, space.slot_input_shape(1))
    arch = space.sample(0)
    assert len(arch_nsr(table, arch)) == space.num_slots



def test_scoring_resumes_and_skips_done_slots(built, space, digits16):
    workdir = built["workdir"]
    (workdir / "library/nsr_slot1.json").unlink()  # as if killed after slot 0
    stamp = (workdir / "library/nsr_slot0.json").stat().st_mtime_ns
    table = score_library(SCORE, space, built["teacher"], digits16, workdir, progress=False)
    assert (workdir / "library/nsr_slot0.json").stat().st_mtime_ns == stamp
    assert table.equals(built["table"])


def test_scoring_without_a_library_says_what_to_run(space, digits16, built, tmp_path):
    with pytest.raises(ValueError, match="slot 0 has no BKD weights"):
        score_library(SCORE, space, built["teacher"], digits16, tmp_path, progress=False)
    with pytest.raises(ValueError, match="run scoring first"):
        load_nsr_table(tmp_path)


def test_convergence_check_reads_the_teacher_identical_options(built, space):
    from donna.nsr import convergence_check

    table = built["table"]
    teacher = space.reference()
    check = convergence_check(table, teacher, threshold=10.0)
    assert check["available"] and check["passed"] and len(check["slots"]) == space.num_slots
    own = [float(table[(table.slot == i) & (table.option == str(b))].nsr.iloc[0]) for i, b in enumerate(teacher.blocks)]
    assert [s["nsr"] for s in check["slots"]] == own
    assert convergence_check(table, teacher, threshold=0.0)["passed"] is False
    assert convergence_check(table, None)["available"] is False


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_missing_or_damaged_bn_file_is_reported_then_rebuilt(built, space, digits16, tmp_path, damage):
    import shutil

    from donna.bkd import BlockLibrary

    workdir = tmp_path / "run"
    shutil.copytree(built["workdir"], workdir)
    bn = workdir / "library" / "bn_slot1.pt"
    original = torch.load(bn, weights_only=True)
    if damage == "delete":
        bn.unlink()
    else:
        bn.write_bytes(bn.read_bytes()[:100])
    with pytest.raises(ValueError, match="bn_slot1.pt.*build-predictor"):
        BlockLibrary(workdir, space).bn_stats(1)
    table = score_library(SCORE, space, built["teacher"], digits16, workdir, progress=False)
    assert table.equals(built["table"])
    rebuilt = torch.load(bn, weights_only=True)
    assert rebuilt["fingerprint"] == original["fingerprint"]
    assert all(torch.equal(rebuilt["stats"][o][k], v) for o, d in original["stats"].items() for k, v in d.items())
