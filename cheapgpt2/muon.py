"""
Muon for the hidden weight matrices, AdamW for everything else: the optimizer of the modern variant.

References:
1) Keller Jordan, "Muon: An optimizer for hidden layers in neural networks" (2024),
   https://kellerjordan.github.io/posts/muon/, and its code, KellerJordan/Muon muon.py: SGD momentum
   (Nesterov, 0.95), then each matrix's update is replaced by the nearest semi-orthogonal matrix,
   computed by 5 steps of a quintic Newton-Schulz iteration in bfloat16 with the coefficients
   (3.4445, -4.7750, 2.0315), and scaled by sqrt(max(1, rows/cols)).
2) KellerJordan/modded-nanogpt (the NanoGPT speedrun): Muon for the 2-D weights inside the blocks only,
   Adam for the embedding, the head and the 1-D parameters; q, k and v orthogonalised as three
   matrices (the 10/14/24 record splits its fused c_attn gradient the same way).
3) Bernstein & Newhouse 2024, "Old Optimizer, New Norm" (arXiv:2409.20325): why orthogonalising the update
   is steepest descent under the spectral norm.

    from cheapgpt2.muon import configure_muon
    optimizer = configure_muon(model, muon_lr=0.02, muon_momentum=0.95, adamw_lr=0.004, embedding_lr=0.2,
                               weight_decay=0.0, betas=(0.8, 0.95), device_type="cuda")
    optimizer.step(); optimizer.zero_grad(set_to_none=True)
"""

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor

# Keller Jordan's quintic: its slope at 0 is a = 3.4445, so small singular values grow fast; the price is
# a band around 1 rather than 1. Iterated to convergence the band is [0.68, 1.13] (modded-nanogpt's README);
# after our 5 steps it is [0.68, 1.21] for every singular value at least 1.6e-3 of the Frobenius norm
# (computed in float64; tests/test_modern.py checks it, and bfloat16 matrices, against that).
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G, steps=5):
    """U @ V.T of the SVD G = U S V.T, approximately: every singular value of G mapped to about 1
    (within the band above). G is (..., rows, cols); the result is bfloat16, of G's shape."""
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    X = G.bfloat16()
    wide = X.size(-2) <= X.size(-1)
    if not wide:
        X = X.mT  # iterate on the wide side: the Gram matrix X X^T is then the smaller square
    # the Frobenius norm bounds the spectral norm, so every singular value starts in [0, 1]
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = X @ X.mT  # (..., r, r) with r = min(rows, cols)
        # X -> a X + b (X X^T) X + c (X X^T)^2 X: the odd polynomial a s + b s^3 + c s^5 of each singular value s
        X = a * X + (b * gram + c * gram @ gram) @ X
    return X if wide else X.mT


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-Schulz, for 2-D weights only (reference 1).

    Per parameter: momentum <- momentum * beta + grad * (1 - beta); the Nesterov look-ahead
    grad * (1 - beta) + momentum * beta is orthogonalised and applied with the step
    lr * sqrt(max(1, rows/cols)), which gives each update about the same RMS whatever the shape.
    weight_decay is decoupled (p <- p * (1 - lr * weight_decay)), as AdamW's and reference 1's.
    A group's row_blocks > 1 cuts each matrix into that many equal row blocks, orthogonalised apart:
    c_attn's q, k and v.

    The matrices of one shape go through Newton-Schulz as one batch (one call, batched matmuls).
    With a process group of several ranks (DDP, or FSDP2 whose DTensor parameters are gathered whole
    here), each rank orthogonalises only its share of every batch and the updates are all-gathered, as
    reference 2 does: the same update on every rank, for 1/world_size of the Newton-Schulz work.
    Momentum stays on every rank for every matrix (elementwise, cheap), so rank 0's state is whole for
    the checkpoint. compile_newton_schulz=True runs the iteration through torch.compile (fused
    elementwise ops, one graph per shape); train.py turns it on with its compile setting.
    """

    def __init__(self, params, lr=0.02, momentum=0.95, weight_decay=0.0, nesterov=True, ns_steps=5, row_blocks=1,
                 compile_newton_schulz=False):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"Muon: lr must be positive and momentum in [0, 1), got lr={lr}, momentum={momentum}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                        ns_steps=ns_steps, row_blocks=row_blocks)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2 or p.size(0) % group["row_blocks"] != 0:
                    raise ValueError(f"Muon: takes 2-D weights whose rows split into row_blocks={group['row_blocks']}, "
                                     f"got shape {tuple(p.shape)}; give embeddings, the head and 1-D parameters to AdamW")
        self.newton_schulz = torch.compile(newton_schulz, fullgraph=True, dynamic=False) if compile_newton_schulz \
            else newton_schulz

    @torch.no_grad()
    def step(self, closure=None):  # closure: torch.optim's signature (distributed.checkpoint calls it so); unused
        for group in self.param_groups:
            beta = group["momentum"]
            params, updates = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                momentum = state["momentum_buffer"]
                momentum.lerp_(p.grad, 1 - beta)
                update = p.grad.lerp(momentum, beta) if group["nesterov"] else momentum
                params.append(p)
                updates.append(full_tensor(update))  # FSDP2: this matrix's whole update, from every rank's shard
            by_shape = {}
            for i, p in enumerate(params):
                by_shape.setdefault(tuple(p.shape), []).append(i)
            blocks = group["row_blocks"]
            for (rows, cols), indices in by_shape.items():
                rows //= blocks
                batch = torch.stack([updates[i] for i in indices]).view(len(indices) * blocks, rows, cols)
                orthogonal = self.orthogonalise(batch, group["ns_steps"]).view(len(indices), rows * blocks, cols)
                scale = max(1.0, rows / cols) ** 0.5
                for j, i in enumerate(indices):
                    p = params[i]
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(local_shard(orthogonal[j], p).to(p.dtype), alpha=-group["lr"] * scale)

    def orthogonalise(self, batch, steps):
        """newton_schulz of a (n, rows, cols) batch; split over the ranks of the default process group when
        there are several: rank r takes matrices [r*k, (r+1)*k), k = ceil(n/world_size), zeros padding the last."""
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world_size == 1:
            return self.newton_schulz(batch, steps)
        n, share = batch.size(0), -(-batch.size(0) // world_size)
        padded = torch.cat([batch, batch.new_zeros((share * world_size - n, *batch.shape[1:]))])
        mine = self.newton_schulz(padded[dist.get_rank() * share:(dist.get_rank() + 1) * share], steps).contiguous()
        gathered = torch.empty((share * world_size, *batch.shape[1:]), dtype=mine.dtype, device=mine.device)
        # as bytes: the same bits through any backend (gloo has no bfloat16 or int16 collectives)
        all_gather_single(gathered.view(torch.uint8), mine.view(torch.uint8))
        return gathered[:n]


# torch 2.13 renamed all_gather_into_tensor (same arguments) and warns on the old name
all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def full_tensor(t):
    """The whole tensor behind an FSDP2 (DTensor) shard, gathered from every rank; a plain tensor as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def local_shard(full, like):
    """The part of `full` that this rank holds of the DTensor `like` (no communication); `full` itself when
    `like` is a plain tensor."""
    if not isinstance(like, DTensor):
        return full
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


class OptimizerList:
    """Several optimizers behind the interface train.py uses of one: param_groups, step, zero_grad,
    state_dict and load_state_dict (a checkpoint holds every optimizer's state)."""

    def __init__(self, optimizers):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self):
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none=True):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict):
        saved = state_dict.get("optimizers") if isinstance(state_dict, dict) else None
        if saved is None or len(saved) != len(self.optimizers):
            raise ValueError("the checkpoint's optimizer state was written with another `optimizer` setting; "
                             "resume with the checkpoint's setting, or use another out_dir")
        for optimizer, state in zip(self.optimizers, saved):
            optimizer.load_state_dict(state)


def muon_parameter_groups(model):
    """{"muon": [...], "muon_qkv": [...], "embedding": [...], "head": [...], "vector": [...]}: every parameter
    of the GPT in exactly one list. Muon takes the 2-D weights inside the blocks (muon_qkv the fused
    c_attn weights, orthogonalised as q, k and v); AdamW the rest: an untied input embedding and the
    position table (embedding), the head, tied or not (head), and every 1-D gain and bias (vector)."""
    groups = {"muon": [], "muon_qkv": [], "embedding": [], "head": [], "vector": []}
    block_params = {id(p) for p in model.transformer.h.parameters()}
    for name, p in model.named_parameters():  # a tied head appears once, as transformer.wte.weight
        if not p.requires_grad:
            continue
        if p.dim() < 2:
            groups["vector"].append(p)
        elif id(p) in block_params:
            groups["muon_qkv" if name.endswith("attn.c_attn.weight") else "muon"].append(p)
        elif p is model.lm_head.weight:
            groups["head"].append(p)
        else:
            groups["embedding"].append(p)
    return groups


def configure_muon(model, muon_lr, muon_momentum, adamw_lr, embedding_lr, weight_decay, betas, device_type,
                   compile_newton_schulz=False):
    """Muon (reference 2's split) and AdamW, as one OptimizerList. Each param group carries lr_scale, its
    learning rate over adamw_lr, so that train.py's schedule moves every group in proportion.
    compile_newton_schulz: train.py's compile setting; the fused iteration is what a GPU gains from."""
    groups = muon_parameter_groups(model)
    muon_groups = [{"params": groups["muon"], "row_blocks": 1}, {"params": groups["muon_qkv"], "row_blocks": 3}]
    adamw_groups = [
        {"params": groups["embedding"], "lr": embedding_lr, "weight_decay": weight_decay},
        {"params": groups["head"], "lr": adamw_lr, "weight_decay": weight_decay},
        {"params": groups["vector"], "lr": adamw_lr, "weight_decay": 0.0},
    ]
    muon = Muon([g for g in muon_groups if g["params"]], lr=muon_lr, momentum=muon_momentum, weight_decay=weight_decay,
                compile_newton_schulz=compile_newton_schulz)
    # the fused kernel is one launch for all parameters; CUDA only
    adamw = torch.optim.AdamW([g for g in adamw_groups if g["params"]], lr=adamw_lr, betas=betas,
                              fused=device_type == "cuda")
    optimizer = OptimizerList([muon, adamw])
    for group in optimizer.param_groups:
        group["lr_scale"] = group["lr"] / adamw_lr
    return optimizer
