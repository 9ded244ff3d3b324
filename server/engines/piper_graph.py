"""Where a Piper graph is cut for sub-sentence streaming, read from its structure.

The parts and why windows of them can be exact are described in
:mod:`chorus.server.engines.piper_windows`. **Where to cut** is read from the graph's
structure, not from tensor names (which differ between exports):

- *decoder input* ``z``: the dominator of the graph output farthest from it, over the
  dataflow from the text inputs (``input``, ``input_lengths``, ``scales``): every path
  from the text to the audio passes through it, and the audio is a function of it alone
  (plus constants and the speaker id). In the stock export that is ``z * mask``.
- *upsampled cut* ``u``: on that dominator chain, the output of the generator's first
  ``ConvTranspose``. Everything before it runs at frame rate and is cheap; everything
  after runs at 8x frame rate and is most of the cost.
- *flow inputs*: the flow is the nodes in the ``/flow/`` scope plus every node fed only
  by them, up to ``z``; its inputs from outside (``z_p`` and the mask) are what the encoder
  part returns. A graph without that scope is cut in two parts only (encoder+flow, then
  decoder), which still streams, with a later first window.

The speaker id (``sid``) is handed to every part whose nodes need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "CONDITIONING_INPUTS",
    "SplitError",
    "SplitLayout",
    "analyze",
    "extract_parts",
]

CONDITIONING_INPUTS = frozenset({"sid"})
"""Graph inputs that condition the audio without being text (Piper's speaker id)."""


class SplitError(Exception):
    """The graph cannot be streamed below sentence level (reason in the message)."""


@dataclass(frozen=True)
class SplitLayout:
    """Where a graph is cut, what each part takes, and how far each reaches in time."""

    encoder_outputs: tuple[str, ...]
    """Tensors the encoder part returns: the flow's inputs, or ``z`` in a two-part cut."""
    z: str
    upsampled: str | None
    """The generator's first upsampled tensor, or ``None`` (decoder in one part)."""
    output: str
    part_inputs: dict[str, tuple[str, ...]]
    """Part name (encoder, flow, dec1, dec2 or dec) → its input names in order."""
    flow_context: int = 0
    dec1_context: int = 0
    dec_context: int = 0
    """Frames of context each stage needs on each side (receptive field + margin)."""
    upsample: int = 1
    """Samples of ``upsampled`` per frame."""
    hop: int = 256
    """Audio samples per frame."""

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.part_inputs)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["part_inputs"] = {k: list(v) for k, v in self.part_inputs.items()}
        data["encoder_outputs"] = list(self.encoder_outputs)
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> SplitLayout:
        return SplitLayout(
            encoder_outputs=tuple(data["encoder_outputs"]), z=data["z"],
            upsampled=data["upsampled"], output=data["output"],
            part_inputs={k: tuple(v) for k, v in data["part_inputs"].items()},
            flow_context=int(data["flow_context"]), dec1_context=int(data["dec1_context"]),
            dec_context=int(data["dec_context"]), upsample=int(data["upsample"]),
            hop=int(data["hop"]))


class _Graph:
    """Dataflow facts about an ONNX graph: producers, static and text-dependent tensors."""

    def __init__(self, model: Any) -> None:
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {init.name for init in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in graph.output]
        self.producer: dict[str, int] = {}
        seen = set(self.inputs) | self.initializers
        for index, node in enumerate(self.nodes):
            for name in node.input:
                if name and name not in seen:
                    raise SplitError(f"graph is not in topological order at {node.name!r}")
            for name in node.output:
                if name:
                    self.producer[name] = index
                    seen.add(name)
        self.text_inputs = [n for n in self.inputs if n not in CONDITIONING_INPUTS]
        self.static: set[str] = set(self.initializers)
        self.dynamic: set[str] = set(self.text_inputs)
        for node in self.nodes:
            inputs = [n for n in node.input if n]
            if all(n in self.static for n in inputs):
                self.static.update(n for n in node.output if n)
            elif any(n in self.dynamic for n in inputs):
                self.dynamic.update(n for n in node.output if n)

    def dynamic_inputs(self, index: int) -> list[str]:
        return [n for n in self.nodes[index].input if n and n in self.dynamic]

    def dominator_chain(self, output: str) -> list[str]:
        """Dominators of ``output`` over the text dataflow, from ``output`` upwards."""
        root = ""
        idom: dict[str, str] = dict.fromkeys(self.text_inputs, root)
        depth: dict[str, int] = {root: 0, **dict.fromkeys(self.text_inputs, 1)}

        def lca(a: str, b: str) -> str:
            while a != b:
                if depth[a] >= depth[b]:
                    a = idom[a]
                else:
                    b = idom[b]
            return a

        for index, node in enumerate(self.nodes):
            preds = self.dynamic_inputs(index)
            if not preds:
                continue
            dom = preds[0]
            for pred in preds[1:]:
                dom = lca(dom, pred)
            for name in node.output:
                if name:
                    idom[name] = dom
                    depth[name] = depth[dom] + 1
        if output not in idom:
            raise SplitError("the audio output does not depend on the text inputs")
        chain = [output]
        while idom[chain[-1]] != root:
            chain.append(idom[chain[-1]])
        return chain

    def cone(self, outputs: Iterable[str], stops: set[str]) -> tuple[list[int], set[str]]:
        """Nodes computing ``outputs`` from ``stops``, and the other non-static names
        they read (graph inputs they need, or tensors a cut left out)."""
        needed: set[int] = set()
        leaves: set[str] = set()
        todo = [n for n in outputs if n not in stops]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            index = self.producer.get(name)
            if index is None:
                if name not in self.initializers:
                    leaves.add(name)
                continue
            needed.add(index)
            todo.extend(n for n in self.nodes[index].input
                        if n and n not in stops and n not in seen)
        return sorted(needed), leaves

    def part_inputs(self, outputs: Sequence[str], inputs: Sequence[str]) -> tuple[str, ...]:
        """``inputs`` plus the conditioning inputs the part needs; raises when the part
        would need anything else."""
        _, leaves = self.cone(outputs, set(inputs))
        extra = leaves - CONDITIONING_INPUTS
        if extra:
            raise SplitError(f"a part computing {list(outputs)} also needs {sorted(extra)}")
        return (*inputs, *sorted(leaves & CONDITIONING_INPUTS))


def _flow_inputs(graph: _Graph, z: str) -> list[str] | None:
    """The flow's inputs from outside (see the module docstring), or ``None``."""
    z_nodes, _ = graph.cone([z], set(graph.inputs))
    ancestors = set(z_nodes)
    region: set[int] = set()
    produced: set[str] = set()
    for index in z_nodes:  # sorted: topological
        node = graph.nodes[index]
        dynamic = graph.dynamic_inputs(index)
        scoped = node.name.startswith("/flow/")
        if not dynamic:
            continue
        if scoped or all(name in produced for name in dynamic):
            region.add(index)
            produced.update(n for n in node.output if n)
    if not any(graph.nodes[i].name.startswith("/flow/") for i in region):
        return None
    external: list[str] = []
    for index in sorted(region & ancestors):
        for name in graph.dynamic_inputs(index):
            if name not in produced and name not in external:
                external.append(name)
    if not external or any(name in graph.inputs for name in external):
        return None
    return external


def analyze(model: Any) -> SplitLayout:
    """Find the cut points of a Piper graph; raises :class:`SplitError` when the graph
    does not have the expected shape. Contexts are filled in later by measurement."""
    graph = _Graph(model)
    if not {"input", "input_lengths", "scales"} <= set(graph.inputs):
        raise SplitError(f"unexpected graph inputs {graph.inputs}")
    if len(graph.outputs) < 1:
        raise SplitError("graph has no output")
    output = graph.outputs[0]
    chain = graph.dominator_chain(output)
    z = chain[-1]
    if z == output or z in graph.inputs:
        raise SplitError("no single tensor separates the decoder from the text encoder")
    upsampled = None
    for name in reversed(chain[:-1]):  # from z towards the output
        producer = graph.producer.get(name)
        if producer is not None and graph.nodes[producer].op_type == "ConvTranspose":
            upsampled = name if name != output else None
            break
    flow = _flow_inputs(graph, z)
    parts: dict[str, tuple[str, ...]] = {}
    encoder_outputs = tuple(flow) if flow else (z,)
    parts["encoder"] = graph.part_inputs(encoder_outputs, graph.text_inputs)
    if flow:
        parts["flow"] = graph.part_inputs([z], flow)
    if upsampled:
        parts["dec1"] = graph.part_inputs([upsampled], [z])
        parts["dec2"] = graph.part_inputs([output], [upsampled])
    else:
        parts["dec"] = graph.part_inputs([output], [z])
    return SplitLayout(encoder_outputs=encoder_outputs, z=z, upsampled=upsampled,
                       output=output, part_inputs=parts)


def _part_outputs(layout: SplitLayout, part: str) -> list[str]:
    return {"encoder": list(layout.encoder_outputs), "flow": [layout.z],
            "dec1": [layout.upsampled or ""], "dec2": [layout.output],
            "dec": [layout.output]}[part]


def extract_parts(model: Any, layout: SplitLayout) -> dict[str, bytes]:
    """Serialized ONNX models of each part."""
    import onnx.utils
    from onnx import TensorProto, helper

    extractor = onnx.utils.Extractor(model)
    for name in {*layout.encoder_outputs, layout.z, layout.upsampled or layout.z}:
        if name not in extractor.value_infos:  # exports without intermediate types
            extractor.value_infos[name] = helper.make_tensor_value_info(
                name, TensorProto.FLOAT, None)
    blobs = {}
    for part, inputs in layout.part_inputs.items():
        sub = extractor.extract_model(list(inputs), _part_outputs(layout, part))
        blobs[part] = sub.SerializeToString()
    return blobs
