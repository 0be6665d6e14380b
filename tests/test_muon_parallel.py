"""Muon's batched and rank-split Newton-Schulz (issue 10 item 9): the same updates as one matrix at a time in
one process. The reference is the per-matrix update written out here as Muon's docstring states it."""

import torch

from cheapgpt2.muon import Muon, newton_schulz

# two shapes with an odd count (the rank split pads), a tall and a wide matrix, and a q/k/v group
SHAPES = [(24, 8), (24, 8), (24, 8), (8, 24), (16, 16)]
QKV_SHAPES = [(24, 8), (24, 8)]
STEPS, LR, WEIGHT_DECAY, MOMENTUM = 3, 0.02, 0.1, 0.95


def make_parameters():
    g = torch.Generator().manual_seed(0)
    matrices = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]
    qkv = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in QKV_SHAPES]
    gradients = [[torch.randn(p.shape, generator=g) for p in matrices + qkv] for _ in range(STEPS)]
    return matrices, qkv, gradients


def run_muon(**muon_kwargs):
    """The parameters after STEPS Muon steps on fixed gradients."""
    matrices, qkv, gradients = make_parameters()
    optimizer = Muon([{"params": matrices}, {"params": qkv, "row_blocks": 3}], lr=LR, momentum=MOMENTUM,
                     weight_decay=WEIGHT_DECAY, **muon_kwargs)
    for step_gradients in gradients:
        for p, grad in zip(matrices + qkv, step_gradients):
            p.grad = grad.clone()
        optimizer.step()
    return [p.detach().clone() for p in matrices + qkv]


def reference_update():
    """One matrix at a time: Nesterov momentum, newton_schulz per row block, decoupled decay, shape scale."""
    matrices, qkv, gradients = make_parameters()
    params = [p.detach().clone() for p in matrices + qkv]
    blocks = [1] * len(matrices) + [3] * len(qkv)
    momenta = [torch.zeros_like(p) for p in params]
    for step_gradients in gradients:
        for p, m, grad, b in zip(params, momenta, step_gradients, blocks):
            m.mul_(MOMENTUM).add_(grad, alpha=1 - MOMENTUM)
            nesterov = grad * (1 - MOMENTUM) + m * MOMENTUM
            rows, cols = p.size(0) // b, p.size(1)
            update = torch.cat([newton_schulz(block) for block in nesterov.split(rows)])
            p.mul_(1 - LR * WEIGHT_DECAY)
            p.add_(update.float(), alpha=-LR * max(1.0, rows / cols) ** 0.5)
    return params


def test_batched_muon_equals_one_matrix_at_a_time():
    for ours, reference in zip(run_muon(), reference_update()):
        # bfloat16 Newton-Schulz: batching must not change a bit of it; the momentum arithmetic is
        # written differently (lerp vs mul/add), hence the float32 rounding tolerance
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)


def test_newton_schulz_traces_as_one_graph():
    # compile_newton_schulz=True compiles this with fullgraph=True: a graph break would be an error on the GPU;
    # aot_eager checks the tracing in a second, without the inductor's C++ compilation
    batch = torch.randn(4, 8, 24, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(newton_schulz, fullgraph=True, dynamic=False, backend="aot_eager")
    torch.testing.assert_close(compiled(batch), newton_schulz(batch), atol=0, rtol=0)


# The 2-rank check (the matrices split over gloo ranks, updates all-gathered, equal to one process) runs in
# test_distributed.py's spawn: test_muon_split_over_two_gloo_ranks_equals_one_process.
