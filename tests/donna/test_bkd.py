"""BKD: a killed run resumes to the uninterrupted result; modes, settings mismatches, the executor."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common.executor import Job, get_executor, list_executors
from donna.bkd import BlockLibrary, run_bkd
from donna.nsr import score_library

from .conftest import BKD, SCORE, tiny_space


class Killed(Exception):
    """Stands for a kill: nothing after it runs, no cleanup writes anything."""


def _kill_at(slot: int, epoch: int, step: int):
    def callback(s: int, e: int, t: int) -> None:
        if (s, e, t) == (slot, epoch, step):
            raise Killed
    return callback


@pytest.mark.parametrize("executor", ["inprocess", "threads"])
def test_killed_bkd_resumes_to_the_same_nsr_table(built, space, digits16, tmp_path, executor):
    cfg = dataclasses.replace(BKD, executor=executor)
    teacher, workdir = built["teacher"], tmp_path / "killed"
    with pytest.raises(Killed):
        run_bkd(cfg, space, teacher, digits16, workdir, progress=False, step_callback=_kill_at(1, 1, 5))
    assert (workdir / "library/slot1.ckpt.pt").is_file()  # epoch 0 of slot 1 was checkpointed
    assert not (workdir / "library/slot1.json").exists()
    run_bkd(cfg, space, teacher, digits16, workdir, progress=False)
    assert not (workdir / "library/slot1.ckpt.pt").exists()
    table = score_library(SCORE, space, teacher, digits16, workdir, progress=False)
    assert table.equals(built["table"])  # bit for bit: same NSR, params and MACs
    for slot in range(space.num_slots):
        ours = torch.load(workdir / f"library/slot{slot}.pt", weights_only=True)["state_dict"]
        ref = torch.load(built["workdir"] / f"library/slot{slot}.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(ours[k], ref[k]) for k in ref)


def test_done_library_is_skipped(built, space, digits16):
    workdir = built["workdir"]
    stamp = (workdir / "library/slot0.pt").stat().st_mtime_ns
    library = run_bkd(BKD, space, built["teacher"], digits16, workdir, progress=False)
    assert (workdir / "library/slot0.pt").stat().st_mtime_ns == stamp
    assert isinstance(library, BlockLibrary) and library.has_slot(1)
    # the tiny teacher is the space's reference, so every slot started from its block (BKDConfig.init)
    assert all(library.manifest(s)["init"] == "teacher" for s in range(space.num_slots))


def test_other_settings_in_the_same_run_folder_fail_and_overwrite_nothing(built, space, digits16):
    workdir = built["workdir"]
    before = (workdir / "library/slot0.pt").read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        run_bkd(dataclasses.replace(BKD, lr=1e-3), space, built["teacher"], digits16, workdir, progress=False)
    assert (workdir / "library/slot0.pt").read_bytes() == before


def test_streamed_features_match_cached_features(built, space, digits16, tmp_path):
    cfg = dataclasses.replace(BKD, features="stream", epochs=1)
    cached = dataclasses.replace(BKD, features="memory", epochs=1)
    a = run_bkd(cfg, space, built["teacher"], digits16, tmp_path / "stream", progress=False)
    b = run_bkd(cached, space, built["teacher"], digits16, tmp_path / "memory", progress=False)
    x = torch.randn(4, *space.slot_input_shape(1))
    spec = space.options(1)[-1]
    # same batches and option draws; teacher features differ only by batch-size rounding
    assert torch.allclose(a.block(1, spec)(x), b.block(1, spec)(x), atol=1e-3)
    assert a.manifest(0)["train_nsr"] == pytest.approx(b.manifest(0)["train_nsr"], rel=1e-3)


def test_independent_mode_trains_every_option(space, digits16, built, tmp_path):
    few = tiny_space(choices={"type": ["ir"], "kernel": [3, 5], "expansion": [2], "depth": [1], "se": [0.0],
                              "act": ["relu"]})
    cfg = dataclasses.replace(BKD, mode="independent", epochs=2)
    library = run_bkd(cfg, few, built["teacher"], digits16, tmp_path, progress=False)
    table = score_library(SCORE, few, built["teacher"], digits16, tmp_path, progress=False)
    assert library.manifest(0)["mode"] == "independent" and len(table) == 4
    assert table.nsr.max() < 1.0


def test_executor_registry_runs_jobs_in_order():
    assert list_executors() == ["inprocess", "processes", "ray", "threads"]
    jobs = [Job(f"job {i}", pow, (i, 2)) for i in range(5)]
    assert get_executor("inprocess").map(jobs) == get_executor("threads").map(jobs) == [0, 1, 4, 9, 16]
    assert get_executor("processes").map(jobs) == [0, 1, 4, 9, 16]
    assert sorted(get_executor("processes").completed(jobs)) == list(enumerate([0, 1, 4, 9, 16]))
    assert sorted(get_executor("threads", workers=2).completed(jobs)) == list(enumerate([0, 1, 4, 9, 16]))
    with pytest.raises(ValueError, match="known executors: inprocess, processes, ray, threads"):
        get_executor("spark")


AUTOGRAD_THEN_FORK = """
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from common.executor import Job, get_executor

def grad_of_square(v):
    x = torch.tensor(float(v), requires_grad=True)
    (x * x).backward()
    return float(x.grad)

with FakeTensorMode():  # what torch's dynamo-based exporter does: it starts autograd's threads in this process
    y = torch.ones(3, requires_grad=True)
    (y * 2).sum().backward()
print(get_executor("processes", workers=2).map([Job(f"job {i}", grad_of_square, (i,)) for i in range(4)]))
"""


def test_process_workers_forked_after_autograd_threads_started_still_run_backward_jobs():
    import subprocess
    import sys

    # a fresh interpreter, so the autograd threads this starts do not reach the other tests' forks
    res = subprocess.run([sys.executable, "-c", AUTOGRAD_THEN_FORK], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[0.0, 2.0, 4.0, 6.0]"
    assert "run in this process" in res.stderr  # the fallback said so


def test_the_ray_executor_without_ray_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as it does where Ray is not installed
    with pytest.raises(ValueError, match=r"install the extra: pip install -e '\.\[ray\]'"):
        get_executor("ray")


def test_sandwich_rule_trains_largest_smallest_and_random_options(space, tmp_path):
    from donna.bkd import SlotTrainer
    from donna.runfolder import RunFolder

    cfg = dataclasses.replace(BKD, sampling="sandwich", random_per_step=2)
    trainer = SlotTrainer(cfg, space, 0, RunFolder(tmp_path), "fp", torch.device("cpu"))
    specs = trainer.step_options(torch.Generator().manual_seed(0))
    options = space.options(0)
    assert len(specs) == 4 and specs[0] == options[-1] == space.reference().blocks[0] and specs[1] == options[0]
    uniform = SlotTrainer(dataclasses.replace(BKD, sampling="uniform"), space, 0, RunFolder(tmp_path), "fp",
                          torch.device("cpu"))
    assert len(uniform.step_options(torch.Generator().manual_seed(0))) == 1
    with pytest.raises(ValueError, match="unknown BKD sampling"):
        SlotTrainer(dataclasses.replace(BKD, sampling="x"), space, 0, RunFolder(tmp_path), "fp",
                    torch.device("cpu")).step_options(torch.Generator())


def test_shifted_views_move_pixels_and_keep_labels(digits16):
    from donna.data import shifted_copy

    view = shifted_copy(digits16.train, seed=1)
    assert view.images.shape == digits16.train.images.shape and torch.equal(view.labels, digits16.train.labels)
    assert not torch.equal(view.images, digits16.train.images)
    assert torch.equal(view.images, shifted_copy(digits16.train, seed=1).images)


def test_cosine_schedule_resumes_to_the_same_weights(built, space, digits16, tmp_path):
    cfg = dataclasses.replace(BKD, lr_schedule="cosine")
    teacher = built["teacher"]
    whole = run_bkd(cfg, space, teacher, digits16, tmp_path / "whole", progress=False)
    with pytest.raises(Killed):
        run_bkd(cfg, space, teacher, digits16, tmp_path / "killed", progress=False, step_callback=_kill_at(1, 1, 3))
    resumed = run_bkd(cfg, space, teacher, digits16, tmp_path / "killed", progress=False)
    x = torch.randn(4, *space.slot_input_shape(1))
    spec = space.options(1)[-1]
    out = whole.block(1, spec)(x)
    assert torch.equal(out, resumed.block(1, spec)(x))
    epoch_schedule = BlockLibrary(built["workdir"], space)  # the same settings with schedule 'epoch'
    assert not torch.allclose(out, epoch_schedule.block(1, spec)(x), atol=1e-4)


def test_cosine_schedule_falls_from_lr_to_near_zero(space, tmp_path):
    from donna.bkd import SlotTrainer
    from donna.runfolder import RunFolder

    cfg = dataclasses.replace(BKD, lr_schedule="cosine", epochs=2)
    trainer = SlotTrainer(cfg, space, 0, RunFolder(tmp_path), "fp", torch.device("cpu"))
    lrs = []
    for epoch, step in ((0, 0), (1, 0), (1, 9)):
        trainer.set_lr(epoch, step, 10)
        lrs.append(trainer.opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(cfg.lr) and lrs[1] == pytest.approx(cfg.lr / 2) and 0 < lrs[2] < cfg.lr / 100
