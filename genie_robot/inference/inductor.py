"""What `WorldModel.compile` asks of torch.compile's inductor (`OPTIONS`), besides its defaults.

- A C++ wrapper (`cpp_wrapper`): the compiled graph calls its kernels from C++, not Python. It is built apart
  from the kernels, at -O1 (`cpp_wrapper_build_separate`): built together, g++ had not finished GENIE_35M's
  frame graph (32 layers in a loop) after 14 minutes; apart it took 75 s, with the same speed
  (docs/BENCHMARKS.md, "One call per frame").
- No "freezing" (the weights as constants): torch 2.13 ignores that option when given per call (only the
  global inductor config turns it on), and turned on that way it was no faster (docs/BENCHMARKS.md, "The
  bias in the next kernel").
- One graph pass (`BiasIntoNextKernel`). A linear layer with a bias lowers to `addmm(bias, x, w)`, which on the
  CPU calls the BLAS GEMM with beta=1: the bias is first copied, broadcast, into every row of the output, and
  the GEMM adds to it. Inductor rewrites this to `mm(x, w) + bias` when every use of the result is
  element-wise, so the add joins the next fused kernel (the GELU after the FFN's first layer, the residual add
  and layer norm after its second, the sampler's scaling after the head), but only on GPUs. On this 2-core CPU
  the copy took about 10 us per linear layer with a bias at 80 tokens; the same rewrite here made the tiny
  shape's 25-step frame 4% faster and sim-rt1's 1.6% (docs/BENCHMARKS.md, "The bias in the next kernel").

The pass also walks the graphs nested in the one it is given (a `while_loop`'s body: the MaskGIT frame's
steps), which inductor's post-grad passes do not enter by themselves.
"""

from __future__ import annotations

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
from torch._inductor.fx_passes.post_grad import is_pointwise_use

aten = torch.ops.aten


class BiasIntoNextKernel(CustomGraphPass):
    """`addmm(bias, x, w)` on a CPU tensor, whose every use is element-wise, becomes `mm(x, w) + bias`."""

    def __init__(self) -> None:
        self.rewritten = 0  # how many addmm it rewrote over its life (for tests and benchmarks)

    def __call__(self, graph: torch.fx.Graph) -> None:
        for node in list(graph.find_nodes(op="call_function", target=aten.addmm.default)):
            val = node.meta.get("val")
            if (val is None or val.device.type != "cpu" or node.kwargs.get("beta", 1) != 1
                    or node.kwargs.get("alpha", 1) != 1 or not all(is_pointwise_use(u) for u in node.users)):
                continue
            bias, x, w = node.args[:3]
            with graph.inserting_before(node):
                mm = graph.call_function(aten.mm.default, (x, w))
                add = graph.call_function(aten.add.Tensor, (mm, bias))
            mm.meta.update(node.meta)  # the product has the sum's shape, dtype and device
            add.meta.update(node.meta)
            node.replace_all_uses_with(add)
            graph.erase_node(node)
            self.rewritten += 1
        module = graph.owning_module
        if module is not None:
            for child in module.children():
                if isinstance(child, torch.fx.GraphModule):
                    self(child.graph)

    def uuid(self) -> bytes:
        # Inductor's compiled-graph cache keys on this: a change to this file compiles anew.
        return get_hash_for_files((__file__,))


OPTIONS = {"cpp_wrapper": True, "cpp_wrapper_build_separate": True,
           "post_grad_custom_post_pass": BiasIntoNextKernel()}
