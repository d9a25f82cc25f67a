"""The Ray executor on a real local Ray: the same library, NSR table and labels as in-process, a job's own error,
a killed worker retried, outstanding tasks cancelled, a custom resource placing a task on its node, and a
killed driver whose next run resumes to the uninterrupted library."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]'): Ray executor tests skip")

from common.executor import Job, RayExecutor, get_executor  # noqa: E402
from donna.bkd import run_bkd  # noqa: E402
from donna.labels import LabelConfig, make_labels  # noqa: E402
from donna.nsr import score_library  # noqa: E402

from .conftest import BKD, SCORE  # noqa: E402

# The job functions below go to Ray's workers by value: importing this module there would import torch and the
# stages first (tens of seconds per fresh worker on two busy cores).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

RAY_INIT = {"include_dashboard": False, "configure_logging": False, "log_to_driver": False}  # Ray sets each task's
# OMP threads to its CPUs (1 here); a runtime_env would add a per-worker agent round trip


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with two CPUs for the module (about 10 s to start), shut down afterwards."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, **RAY_INIT)
    yield ray
    ray.shutdown()


def _fail(message: str) -> None:
    raise ValueError(message)


def _die_on_first_attempt(marker: str, value: int) -> int:
    """Kills its own worker the first time (the marker file says whether it ran before), then returns 2 * value."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return 2 * value


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _node() -> str:
    return ray.get_runtime_context().get_node_id()


def test_bkd_and_nsr_table_equal_in_process(local_ray, built, space, digits16, tmp_path):
    teacher, tables, weights = built["teacher"], {}, {}
    for executor in ("inprocess", "ray"):
        folder = tmp_path / executor
        bkd = dataclasses.replace(BKD, executor=executor, epochs=1)
        library = run_bkd(bkd, space, teacher, digits16, folder, progress=False)
        weights[executor] = [library.slot_module(s).state_dict() for s in range(space.num_slots)]
        tables[executor] = score_library(dataclasses.replace(SCORE, executor=executor), space, teacher, digits16,
                                         folder, progress=False)
        assert not list((folder / "library").glob("*.ckpt.pt"))  # the driver removed the finished checkpoints
    for a, b in zip(weights["inprocess"], weights["ray"]):
        assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    a, b = tables["inprocess"], tables["ray"]
    assert list(a["option"]) == list(b["option"]) and len(a) == 2 * 32
    assert (a["nsr"] - b["nsr"]).abs().max() < 1e-6 and (a["macs"] == b["macs"]).all()


def test_labels_equal_in_process(local_ray, built, space, digits16, tmp_path):
    frames = {}
    for executor in ("inprocess", "ray"):
        folder = tmp_path / executor
        shutil.copytree(built["workdir"] / "library", folder / "library")
        cfg = LabelConfig(num_labels=2, epochs=1, train_samples=300, executor=executor, seed=3)
        frames[executor] = make_labels(cfg, space, built["teacher"], digits16, folder, built["table"], progress=False)
    a, b = frames["inprocess"], frames["ray"]
    assert list(a["key"]) == list(b["key"]) and len(a) == 2
    assert (a["accuracy"] - b["accuracy"]).abs().max() < 1e-6
    assert (a["bkd_accuracy"] - b["bkd_accuracy"]).abs().max() < 1e-6


def test_a_job_that_raises_fails_with_its_own_error(local_ray):
    jobs = [Job("fine", pow, (3, 2)), Job("broken", _fail, ("slot 7 has no weights; run BKD first",))]
    with pytest.raises(ValueError, match="slot 7 has no weights; run BKD first"):
        get_executor("ray").map(jobs)


def test_a_killed_worker_is_retried_and_the_map_completes(local_ray, tmp_path):
    executor = RayExecutor(max_retries=2)
    jobs = [Job(f"job {i}", _die_on_first_attempt, (str(tmp_path / f"ran-{i}"), i)) for i in range(3)]
    jobs[1] = Job("job 1", pow, (1, 2))  # jobs 0 and 2 die once, job 1 does not
    assert executor.map(jobs) == [0, 1, 4]
    assert (tmp_path / "ran-0").is_file() and (tmp_path / "ran-2").is_file()
    assert executor.attempts in ({"job 0": 2, "job 2": 2}, {})  # {} where Ray does not tell the attempt number


def _always_die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_on_every_attempt_fails_naming_the_job(local_ray):
    with pytest.raises(RuntimeError, match="always: its Ray worker died on each of 2 attempts"):
        RayExecutor(max_retries=1).map([Job("always", _always_die, ())])


def test_leaving_completed_early_cancels_outstanding_tasks(local_ray):
    executor = RayExecutor()
    results = executor.completed([Job("quick", pow, (2, 2)), Job("slow 1", _sleep, (120,)),
                                  Job("slow 2", _sleep, (120,))])
    assert next(results) == (0, 4)
    results.close()  # what Ctrl-C (or a failed job) does: the generator's cleanup cancels the rest
    start = time.perf_counter()
    assert executor.map([Job("after 1", pow, (2, 3)), Job("after 2", pow, (2, 4))]) == [8, 16]
    assert time.perf_counter() - start < 60  # both CPUs were freed; the sleepers would hold them for 120 s


@pytest.fixture
def two_nodes(local_ray):
    """A two-node Ray cluster on 127.0.0.1; only the second node advertises ``device:cpu``."""
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    device_node = cluster.add_node(num_cpus=1, resources={"device:cpu": 1})
    ray.init(address=cluster.address, **RAY_INIT)
    cluster.wait_for_nodes()
    yield device_node.node_id
    ray.shutdown()
    cluster.shutdown()


def test_a_task_requesting_a_device_resource_runs_on_the_node_that_has_it(two_nodes):
    executor = RayExecutor(address="auto", resources={"device:cpu": 1})
    nodes = executor.map([Job(f"measure {i}", _node, ()) for i in range(3)])
    assert set(nodes) == {two_nodes}
    assert len({n["NodeID"] for n in ray.nodes() if n["Alive"]}) == 2


DRIVER = """
import dataclasses, json, sys
import ray
from blocks import SearchSpace
from donna.bkd import run_bkd
from donna.config import BKDConfig, TeacherConfig
from donna.data import get_dataset
from donna.teacher import get_teacher
space_json, teacher_json, bkd_json, workdir = sys.argv[1:]
ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
space = SearchSpace.from_dict("tiny", json.loads(space_json))
data = get_dataset("digits", input_size=16, seed=0)
teacher = get_teacher(TeacherConfig(**json.loads(teacher_json)), space, data, workdir, progress=False)
run_bkd(BKDConfig(**json.loads(bkd_json)), space, teacher, data, workdir, progress=False)
"""


def test_a_driver_killed_mid_stage_resumes_to_the_uninterrupted_library(local_ray, built, space, digits16,
                                                                         tmp_path):
    """SIGKILL of the driver (not a worker) once a slot has checkpointed an epoch; the next run resumes."""
    from .conftest import TEACHER, TINY

    bkd = dataclasses.replace(BKD, executor="ray", epochs=3)
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in ("teacher.pt", "teacher.json", "config.json"):
        shutil.copy(built["workdir"] / name, killed / name)
    config = [json.dumps(TINY), json.dumps(dataclasses.asdict(TEACHER)), json.dumps(dataclasses.asdict(bkd))]
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, *config, str(killed)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((killed / "library").glob("slot*.ckpt.pt")) and driver.poll() is None:
        assert time.monotonic() < deadline, "no slot checkpointed an epoch within 240 s"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    _, err = driver.communicate()
    assert driver.returncode == -signal.SIGKILL, f"the driver ended before it was killed: {err[-2000:]}"

    resumed = run_bkd(bkd, space, built["teacher"], digits16, killed, progress=False)
    whole = run_bkd(dataclasses.replace(bkd, executor="inprocess"), space, built["teacher"], digits16,
                    tmp_path / "whole", progress=False)
    for s in range(space.num_slots):
        a, b = resumed.slot_module(s).state_dict(), whole.slot_module(s).state_dict()
        assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert not list((killed / "library").glob("*.ckpt.pt"))


def _mini_space():
    """mbconv-tiny with 2 options per slot: a latency table in seconds."""
    from blocks import get_space
    from blocks.spaces import SlotSpace

    space = get_space("mbconv-tiny")
    narrow = {"kernel": (3, 5), "expansion": (2,), "depth": (1,), "se": (0.0,), "act": ("relu",)}
    slots = tuple(SlotSpace(s.stride, s.out_channels, {**s.choices, **narrow}) for s in space.slots)
    return dataclasses.replace(space, name="mini-ray", slots=slots)


def test_a_latency_table_measures_only_on_the_node_that_advertises_the_device(two_nodes, tmp_path):
    from common.fileio import read_jsonl
    from latency import build_latency_table
    from latency.cli import table_executor

    executor = table_executor("ray", "cpu", "auto")
    fast = {"min_time_s": 0.02, "max_time_s": 0.2, "target_ci": 0.05, "warmup_max_s": 0.1}
    table = build_latency_table(_mini_space(), "cpu", tmp_path / "table", protocol=fast, progress=False,
                                n_calibration=3, n_validation=2, n_repeat=1, rounds=3, executor=executor)
    rows = [r for r in read_jsonl(tmp_path / "table" / "rows.jsonl") if r["job"] != "meta"]
    assert {r["ray_node"] for r in rows} == {two_nodes}  # every measurement ran on the device's node
    jobs = {r["job"] for r in rows if r["job"] != "canary"}
    assert len(rows) - sum(r["job"] == "canary" for r in rows) == 3 * len(jobs)  # every job, every round, once
    assert table.validation["n"] == 2 and table.calibration.n == 3
    with pytest.raises(RuntimeError, match=r"no node of the Ray cluster advertises device:v100: start .*ray start"):
        table_executor("ray", "v100", "auto").connect()
