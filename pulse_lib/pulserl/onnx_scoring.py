"""Score every user with ONNX Runtime: the same Q-network, the same numbers, faster.

A trained :class:`~pulse_lib.pulserl.agents.QuantileQNetwork` is written out as an ONNX
graph of ``Gemm`` and ``Relu`` nodes and run by ONNX Runtime's CPU provider. The
mean-over-quantiles head is folded into the last ``Gemm`` (the mean of a linear layer's
outputs is the linear layer with averaged rows, as in
:meth:`~pulse_lib.pulserl.agents.QuantileQNetwork.mean_q`), so 200 quantiles cost no
more to score than one.

Why it is faster than the library's PyTorch scorer
(:func:`~pulse_lib.pulserl.agents.score_mean_q`) on a CPU core: ONNX Runtime packs each
weight matrix into its matrix-product kernel's layout once, when the session is built,
and fuses bias and ReLU into the product; PyTorch's BLAS call re-packs the weights for
every chunk. ``benchmarks/pulserl_scoring.py`` measures both side by side; the results
agree with PyTorch's to float32 rounding (and the greedy decisions exactly, except on
exact ties).

Needs the ``onnx`` and ``onnxruntime`` packages (dependencies of ``pulse-lib``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataFormatError, PathError, SchemaError
from ..io import atomic_write
from .agents import QuantileQNetwork

#: Rows per ``run`` call, measured fastest on one CPU core for the 63 -> 256 -> 256 -> 2
#: network (``benchmarks/pulserl_scoring.py``, ``onnx_chunk_sweep``): a chunk's
#: activations stay in the core's L2 cache.
ONNX_CHUNK = 512

#: The ONNX operator set the graph is written against (``Gemm`` and ``Relu`` are
#: unchanged since 13).
OPSET = 17


def network_to_onnx(net: QuantileQNetwork) -> bytes:
    """The serialized ONNX model computing ``net``'s ``(n, actions)`` mean Q-values.

    Input ``obs`` of shape ``(n, n_features)`` float32, output ``q`` of shape
    ``(n, actions)``. Only networks built by :class:`QuantileQNetwork` (linear layers
    with ReLU between them) are accepted.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(net, QuantileQNetwork):
        raise ConfigError(
            f"network_to_onnx needs a QuantileQNetwork, got {type(net).__name__}"
        )
    linears = [layer for layer in net.body if isinstance(layer, nn.Linear)]
    others = [
        type(layer).__name__
        for layer in net.body
        if not isinstance(layer, (nn.Linear, nn.ReLU))
    ]
    if others:
        raise ConfigError(f"cannot export layers of type {sorted(set(others))}")
    with torch.no_grad():
        head = linears[-1]
        head_weight = head.weight.view(net.n_actions, net.n_quantiles, -1).mean(dim=1)
        head_bias = head.bias.view(net.n_actions, net.n_quantiles).mean(dim=1)
        layers = [(layer.weight, layer.bias) for layer in linears[:-1]]
        layers.append((head_weight, head_bias))
        arrays = [
            (w.detach().cpu().numpy().astype(np.float32), b.detach().cpu().numpy())
            for w, b in layers
        ]
    nodes, initializers, previous = [], [], "obs"
    for index, (weight, bias) in enumerate(arrays):
        initializers += [
            numpy_helper.from_array(weight, f"weight_{index}"),
            numpy_helper.from_array(bias.astype(np.float32), f"bias_{index}"),
        ]
        last = index == len(arrays) - 1
        product = "q" if last else f"linear_{index}"
        # transB=1: the weight is stored (out, in), as PyTorch holds it
        nodes.append(
            helper.make_node(
                "Gemm",
                [previous, f"weight_{index}", f"bias_{index}"],
                [product],
                transB=1,
            )
        )
        if not last:
            previous = f"relu_{index}"
            nodes.append(helper.make_node("Relu", [product], [previous]))
    n_features = linears[0].in_features
    graph = helper.make_graph(
        nodes,
        "mean_q",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", n_features])],
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["n", net.n_actions])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime release since 1.10
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OnnxScorer:
    """Mean Q-values and greedy decisions of a network, run by ONNX Runtime.

    Build it from a trained network (``OnnxScorer(agent.net)``) or from a saved model
    (:meth:`load`). ``threads`` is ONNX Runtime's intra-op thread count (1 keeps one
    core, as the book's CI does); ``chunk`` the rows per call (default
    :data:`ONNX_CHUNK`).
    """

    def __init__(
        self,
        source: QuantileQNetwork | bytes,
        threads: int = 1,
        chunk: int = ONNX_CHUNK,
    ) -> None:
        import onnxruntime as ort

        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ConfigError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.model = source if isinstance(source, bytes) else network_to_onnx(source)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(
                self.model, options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own, unexported classes
            raise DataFormatError(f"not a valid ONNX scoring model: {error}") from error
        (inputs,), (outputs,) = self.session.get_inputs(), self.session.get_outputs()
        if inputs.name != "obs" or outputs.name != "q" or len(inputs.shape) != 2:
            raise DataFormatError(
                "the ONNX model is not a scoring model of this library (expected input "
                f"'obs' (n, features) and output 'q'; got {inputs.name} {inputs.shape} "
                f"-> {outputs.name})"
            )
        self.n_features = int(inputs.shape[1])
        self.n_actions = int(outputs.shape[1])
        self.chunk = chunk

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> OnnxScorer:
        """A scorer from a model written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no ONNX model at {path}")
        if not path.is_file():
            raise PathError(f"{path} is a directory, not an ONNX model file")
        try:
            return cls(path.read_bytes(), **kwargs)
        except DataFormatError as error:
            raise DataFormatError(f"{path}: {error}") from error

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ONNX model atomically (no half-written file on failure)."""
        with atomic_write(path, "wb") as handle:
            handle.write(self.model)
        return Path(path)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """``(n, actions)`` float32 mean Q-values of every row of ``obs``."""
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.n_features:
            raise SchemaError(
                f"obs must have shape (n, {self.n_features}), got {obs.shape}"
            )
        out = np.empty((obs.shape[0], self.n_actions), np.float32)
        run, isfinite = self.session.run, np.isfinite
        for start in range(0, obs.shape[0], self.chunk):
            block = obs[start : start + self.chunk]
            if not isfinite(block).all():  # checked per chunk, while it is in cache
                rows = np.flatnonzero(~isfinite(obs).all(axis=1))
                raise SchemaError(
                    f"obs has non-finite values in {rows.size} rows (first: row "
                    f"{rows[0]})"
                )
            out[start : start + self.chunk] = run(None, {"obs": block})[0]
        return out

    def policy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy policy: probability of sending (0 or 1), as ``TorchCQL.policy``."""
        q = self.q_values(obs)
        return (q[:, 1] > q[:, 0]).astype(float)
