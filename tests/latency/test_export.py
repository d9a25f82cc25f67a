"""ONNX export: both exporters correct, caching, static shapes, bad input, nothing half-written."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from latency import BadModelError, export_onnx
from latency.export import BATCH_DIM, OPSETS, onnx_input_shape

from .conftest import tiny_model


def _ort_output(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("exporter", sorted(OPSETS))
def test_both_exporters_produce_correct_static_models(exporter, tmp_path):
    model = tiny_model()
    path = export_onnx(model, (8, 16, 16), cache_dir=tmp_path, exporter=exporter)
    onnx.checker.check_model(str(path))
    assert onnx_input_shape(onnx.load(str(path))) == (1, 8, 16, 16)
    x = np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort_output(path, x), want, rtol=1e-4, atol=1e-5)


def test_export_is_cached_by_model_hash(tmp_path):
    model = tiny_model()
    first = export_onnx(model, (8, 16, 16), cache_dir=tmp_path)
    stamp = first.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = export_onnx(model, (8, 16, 16), cache_dir=tmp_path)
    assert again == first and first.stat().st_mtime_ns == stamp and time.perf_counter() - t0 < 0.2
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert export_onnx(model, (8, 16, 16), cache_dir=tmp_path) != first  # other weights, other artifact
    assert export_onnx(model, (8, 8, 8), cache_dir=tmp_path) != first  # other shape, other artifact


def test_arch_export_uses_its_input(tmp_path):
    from blocks import get_space

    arch = get_space("mbconv-tiny").sample(3)
    path = export_onnx(arch, cache_dir=tmp_path, path=tmp_path / "arch.onnx")
    assert path == tmp_path / "arch.onnx"
    assert onnx_input_shape(onnx.load(str(path))) == (1, arch.in_channels, arch.input_size, arch.input_size)


def test_dynamic_dims_are_fixed_from_input_shape(tmp_path):
    dyn = tmp_path / "dyn.onnx"
    torch.onnx.export(tiny_model(), (torch.randn(1, 8, 16, 16),), str(dyn), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    with pytest.raises(BadModelError, match="dynamic input dims"):
        export_onnx(dyn, cache_dir=tmp_path)
    fixed = export_onnx(dyn, (8, 16, 16), cache_dir=tmp_path)
    assert fixed != dyn and onnx_input_shape(onnx.load(str(fixed))) == (1, 8, 16, 16)


def test_a_dynamic_batch_alone_is_measured_at_batch_1(tmp_path):
    dyn = tmp_path / "dyn.onnx"
    torch.onnx.export(tiny_model(), (torch.randn(1, 8, 16, 16),), str(dyn), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    fixed = export_onnx(dyn, cache_dir=tmp_path)
    assert fixed != dyn and onnx_input_shape(onnx.load(str(fixed))) == (1, 8, 16, 16)
    assert onnx_input_shape(onnx.load(str(dyn))) == ("batch", 8, 16, 16)  # the file itself is left as it is


@pytest.mark.parametrize("exporter", sorted(OPSETS))
def test_dynamic_batch_export_runs_at_any_batch(exporter, tmp_path):
    model = tiny_model()
    path = export_onnx(model, (8, 16, 16), cache_dir=tmp_path, exporter=exporter, dynamic_batch=True,
                       path=tmp_path / "model.onnx")
    assert onnx_input_shape(onnx.load(str(path))) == (BATCH_DIM, 8, 16, 16)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 8, 16, 16)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_ort_output(path, x), want, rtol=1e-4, atol=1e-4)
    static = export_onnx(model, (8, 16, 16), cache_dir=tmp_path, exporter=exporter)
    assert static != path and onnx_input_shape(onnx.load(str(static))) == (1, 8, 16, 16)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # the static export refuses batch 3
        _ort_output(static, np.zeros((3, 8, 16, 16), np.float32))
    with pytest.raises(BadModelError, match="not to an .onnx file"):
        export_onnx(path, cache_dir=tmp_path, dynamic_batch=True)


def test_bad_input_gives_one_line_errors(tmp_path, tiny_onnx):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf at all")
    for args, pattern in [((tmp_path / "missing.onnx",), "does not exist"), ((corrupt,), "not a valid ONNX model"),
                          ((tiny_onnx, (3, 32, 32)), "does not match"), ((tiny_model(),), "needs input_shape")]:
        with pytest.raises(BadModelError, match=pattern) as info:
            export_onnx(*args, cache_dir=tmp_path)
        assert "\n" not in str(info.value)


class Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_failed_export_leaves_nothing_in_the_cache(tmp_path):
    with pytest.raises(BadModelError, match="boom"):
        export_onnx(Broken(), (3, 8, 8), cache_dir=tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
