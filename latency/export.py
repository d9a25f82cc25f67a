"""Turn an ``Arch``, an ``nn.Module`` or an ``.onnx`` file into a checked, static-shape ONNX file (or, on request,
one whose batch dimension is symbolic, for deployment; measurements always fix it)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import warnings
from pathlib import Path

import onnx

from common.fileio import atomic_path

from .cache import ArtifactCache, artifact_key, file_sha256
from .errors import BadModelError

EXPORTER_ENV = "LATENCY_ONNX_EXPORTER"
DEFAULT_EXPORTER = "torchscript"  # ~0.3 s per model here vs ~3 s for "dynamo" (see docs/latency.md)
OPSETS = {"torchscript": 17, "dynamo": 18}
INPUT_NAME, OUTPUT_NAME = "input", "output"
BATCH_DIM = "batch"  # name of the symbolic batch dimension of a dynamic-batch export


def exporter_name(exporter: str | None = None) -> str:
    """The ONNX exporter to use: the argument, else ``$LATENCY_ONNX_EXPORTER``, else the default.

    This is the one place the exporter is chosen.
    """
    name = exporter or os.environ.get(EXPORTER_ENV) or DEFAULT_EXPORTER
    if name not in OPSETS:
        raise BadModelError(f"unknown ONNX exporter {name!r}; choose one of {sorted(OPSETS)}")
    return name


def is_arch(obj) -> bool:
    """Duck-typed check for a ``blocks.Arch`` (avoids importing torch-heavy code for .onnx paths)."""
    return all(hasattr(obj, a) for a in ("key", "blocks", "input_size", "in_channels"))


def batch_shape(input_shape, rank: int | None = None) -> tuple[int, ...]:
    """``(C, H, W)`` -> ``(1, C, H, W)``; a shape that already has the batch dimension is kept."""
    shape = tuple(int(d) for d in input_shape)
    if rank is None:
        return shape if len(shape) == 4 else (1, *shape)
    return (1, *shape) if len(shape) == rank - 1 else shape


def module_hash(module) -> str:
    """Hash of a module's structure (repr and class names) and of its parameters and buffers."""
    import torch

    h = hashlib.sha256(repr(module).encode())
    for name, sub in module.named_modules():
        h.update(f"{name}:{type(sub).__module__}.{type(sub).__qualname__};".encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def _torch_export(module, shape: tuple[int, ...], out: Path, exporter: str, dynamic_batch: bool = False) -> None:
    """Export ``module`` at ``shape`` to ``out`` with the chosen exporter, quietly; ``dynamic_batch`` makes the
    first dimension of the input and the output symbolic (``BATCH_DIM``)."""
    import torch

    was_training = module.training
    module.eval()
    if dynamic_batch:  # traced at batch 2: a size-1 example lets an exporter bake the batch in as a constant
        shape = (2, *shape[1:])
    x = torch.randn(*shape)
    kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSETS[exporter])
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                if dynamic_batch:
                    kwargs["dynamic_shapes"] = ({0: torch.export.Dim(BATCH_DIM, min=1)},)
                torch.onnx.export(module, (x,), str(out), dynamo=True, external_data=False, **kwargs)
            else:
                if dynamic_batch:
                    kwargs["dynamic_axes"] = {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}}
                torch.onnx.export(module, (x,), str(out), dynamo=False, do_constant_folding=True, **kwargs)
    finally:
        module.train(was_training)


def _load_model(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise BadModelError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # onnx raises several unrelated types for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadModelError(f"{path} is not a valid ONNX model: {first}") from None
    return model


def _graph_inputs(model: onnx.ModelProto) -> list:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def onnx_input_shape(model: onnx.ModelProto) -> tuple:
    """Shape of the model's single input; dynamic dimensions are returned as their name (str)."""
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        raise BadModelError(f"expected a model with one input, got {len(inputs)}: {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in dims)


def _fix_shape(model: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    """Write ``shape`` into the input's dimensions (makes dynamic dims static)."""
    dims = _graph_inputs(model)[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, shape):
        dim.Clear()
        dim.dim_value = value


def _resolve_onnx_file(path: Path, input_shape, cache: ArtifactCache) -> Path:
    """Check an existing ONNX file; return it, or a cached copy with its dynamic dims fixed (a model whose only
    dynamic dimension is the batch is measured at batch 1 without ``input_shape``)."""
    model = _load_model(path)
    current = onnx_input_shape(model)
    want = batch_shape(input_shape, len(current)) if input_shape is not None else None
    if want is None and len(current) > 1 and all(isinstance(d, int) for d in current[1:]):
        want = (1, *current[1:])
    if want is not None and len(want) != len(current):
        raise BadModelError(f"input shape {want} does not match {path.name}'s input rank {len(current)} {current}")
    static = all(isinstance(d, int) for d in current)
    if static:
        if want is not None and tuple(current) != want:
            raise BadModelError(f"input shape {want} does not match {path.name}'s input {tuple(current)}")
        return path
    if want is None:
        raise BadModelError(f"{path.name} has dynamic input dims {current}; pass input_shape, e.g. 3,224,224")
    for have, w in zip(current, want):
        if isinstance(have, int) and have != w:
            raise BadModelError(f"input shape {want} does not match {path.name}'s input {tuple(current)}")
    _fix_shape(model, want)

    def make(tmp: Path) -> None:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))

    return cache.get_or_make("onnx", {"source_sha256": file_sha256(path), "shape": want}, ".onnx", make)


def _export_parts(model_id: str, shape, exporter: str, dynamic_batch: bool) -> dict:
    """What an export's cache key is made of."""
    import torch

    parts = {"model": model_id, "shape": list(shape), "exporter": exporter,
             "opset": OPSETS[exporter], "torch": torch.__version__}
    if dynamic_batch:  # in the key only when asked for: the keys of static exports stay as they were
        parts["dynamic_batch"] = True
    return parts


def is_exported(shape, model_id: str, cache_dir: Path | str | None = None, exporter: str | None = None) -> bool:
    """Whether :func:`export_module` of ``model_id`` at ``shape`` would be a cache hit (a static export)."""
    cache = cache_dir if isinstance(cache_dir, ArtifactCache) else ArtifactCache(cache_dir)
    exporter = exporter_name(exporter)
    return cache.path("onnx", artifact_key(kind="onnx", **_export_parts(model_id, shape, exporter, False)),
                      ".onnx").exists()


def export_module(make_module, shape, model_id: str, cache_dir: Path | str | None = None,
                  exporter: str | None = None, dynamic_batch: bool = False) -> Path:
    """Export ``make_module()`` through the cache; the module is only built on a cache miss.

    Args:
        make_module: returns the ``nn.Module`` to export.
        shape: full input shape including the batch dimension.
        model_id: names the module's content (e.g. ``"arch:<key>"`` or a block string and its input).
        cache_dir: cache root (default :func:`latency.cache.default_cache_dir`).
        exporter: see :func:`exporter_name`.
        dynamic_batch: give the exported model a symbolic batch dimension (``shape[0]`` is then ignored).
    """
    cache = cache_dir if isinstance(cache_dir, ArtifactCache) else ArtifactCache(cache_dir)
    exporter = exporter_name(exporter)
    parts = _export_parts(model_id, shape, exporter, dynamic_batch)
    want = (BATCH_DIM, *shape[1:]) if dynamic_batch else tuple(shape)

    def make(tmp: Path) -> None:
        try:
            _torch_export(make_module(), shape, tmp, exporter, dynamic_batch)
        except Exception as err:  # torch raises many types; the caller gets one line
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise BadModelError(f"ONNX export ({exporter}) of {model_id} failed: {first}") from err
        exported = onnx.load(str(tmp))
        onnx.checker.check_model(exported)
        if tuple(onnx_input_shape(exported)) != want:
            raise BadModelError(f"exported model has input {onnx_input_shape(exported)}, expected {want}")

    return cache.get_or_make("onnx", parts, ".onnx", make)


def export_onnx(model_or_arch_or_path, input_shape=None, path: Path | str | None = None,
                cache_dir: Path | str | None = None, exporter: str | None = None, dynamic_batch: bool = False) -> Path:
    """Produce a checked ONNX model with a static input shape (batch 1 unless the shape says otherwise), or with
    a symbolic batch dimension (``dynamic_batch``, for deployment; a latency measurement of it fixes batch 1).

    Exports are cached under a key of the model hash (``arch.key`` for an Arch), the shape, the
    exporter and its opset and the torch version, so a second call costs a hash lookup.

    Args:
        model_or_arch_or_path: an ``nn.Module`` (needs ``input_shape``), a ``blocks.Arch``, or the
            path of an ``.onnx`` file (checked; dynamic dims are fixed from ``input_shape``).
        input_shape: ``(C, H, W)`` or ``(N, C, H, W)``; for an Arch it defaults to the Arch's input.
        path: where to put the result as well (atomically); default: only the cache.
        cache_dir: cache root; default ``$LATENCY_CACHE_DIR`` or ``~/.cache/donna-nas/latency``.
        exporter: ``"torchscript"`` or ``"dynamo"``; default from :func:`exporter_name`.
        dynamic_batch: export the module or Arch with a symbolic batch dimension named ``BATCH_DIM``.

    Returns:
        Path of the ONNX file (``path`` when given).

    Raises:
        BadModelError: missing or corrupt file, missing shape, a shape that does not match, or ``dynamic_batch``
            for an ``.onnx`` file (it is exported as it is).
    """
    cache = ArtifactCache(cache_dir)
    obj = model_or_arch_or_path
    if isinstance(obj, (str, Path)) and dynamic_batch:
        raise BadModelError(f"{obj}: dynamic_batch applies to exports from a model or an Arch, not to an .onnx file")
    if isinstance(obj, (str, Path)):
        result = _resolve_onnx_file(Path(obj), input_shape, cache)
    elif is_arch(obj):
        from blocks import build_model

        shape = batch_shape(input_shape or (obj.in_channels, obj.input_size, obj.input_size))
        result = export_module(lambda: build_model(obj), shape, f"arch:{obj.key}", cache, exporter, dynamic_batch)
    else:
        if input_shape is None:
            raise BadModelError("exporting an nn.Module needs input_shape, e.g. (3, 32, 32)")
        result = export_module(lambda: obj, batch_shape(input_shape), f"module:{module_hash(obj)}", cache,
                               exporter, dynamic_batch)
    if path is None:
        return result
    with atomic_path(path, suffix=".onnx") as tmp:
        shutil.copyfile(result, tmp)
    return Path(path)
