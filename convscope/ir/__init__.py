"""Framework-neutral layer graph (IR): op kinds, typed attributes, shapes, validation."""

from convscope.ir.graph import Graph, GraphBuilder, Node, TensorInfo
from convscope.ir.ops import OpKind
from convscope.ir import ops

__all__ = ["Graph", "GraphBuilder", "Node", "TensorInfo", "OpKind", "ops"]
