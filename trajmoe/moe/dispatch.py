"""Dropless token dispatch for the "grouped" path: sort slots by expert once, run both expert
GEMMs on the contiguous groups, and un-sort with a gather.

Every permutation here is a gather whose backward is another gather with the precomputed inverse
index (no atomic index_add / scatter_add in backward), and nothing reads counts back to the host
on CUDA, so the path is free of host-device synchronisation there.
Legend: T tokens, K chosen experts per token, S = T*K token slots, D/H dims, E experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Plan:
    """A routing plan shared by both expert GEMMs of one layer call."""

    order_S: torch.Tensor  # slot ids sorted by expert (stable)
    inverse_S: torch.Tensor  # inverse permutation: sorted position of each slot
    expert_sorted_S: torch.Tensor  # expert id of each sorted slot
    counts_E: torch.Tensor  # slots per expert (int64)
    offsets_E: torch.Tensor  # cumulative counts, int32 (grouped_mm's `offs`)
    top_k: int


def make_plan(expert_ids_TK: torch.Tensor, num_experts: int) -> Plan:
    flat_S = expert_ids_TK.reshape(-1)
    order_S = torch.argsort(flat_S, stable=True)
    inverse_S = torch.empty_like(order_S)
    inverse_S[order_S] = torch.arange(order_S.numel(), device=order_S.device)
    counts_E = torch.zeros(num_experts, dtype=torch.int64, device=flat_S.device)
    counts_E.scatter_add_(0, flat_S, torch.ones_like(flat_S))  # bincount would sync on CUDA
    offsets_E = counts_E.cumsum(0).to(torch.int32)
    return Plan(order_S, inverse_S, flat_S[order_S], counts_E, offsets_E, expert_ids_TK.shape[-1])


class _GatherRows(torch.autograd.Function):
    """y = x[index // k]; backward: grad_x = grad_y[inverse].view(T, k, D).sum(1) (no atomics)."""

    @staticmethod
    def forward(ctx, x_TD, order_S, inverse_S, k: int):
        ctx.save_for_backward(inverse_S)
        ctx.k = k
        return x_TD.index_select(0, order_S // k if k > 1 else order_S)

    @staticmethod
    def backward(ctx, g_SD):
        (inverse_S,) = ctx.saved_tensors
        g = g_SD.index_select(0, inverse_S)
        if ctx.k > 1:
            g = g.view(-1, ctx.k, g.shape[-1]).sum(dim=1)
        return g, None, None, None


class _Permute(torch.autograd.Function):
    """y = x[perm]; backward: grad_x = grad_y[inverse_perm] (a gather, not a scatter)."""

    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(perm, inverse)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, g):
        _perm, inverse = ctx.saved_tensors
        return g.index_select(0, inverse), None, None


def permute_in(x_TD: torch.Tensor, plan: Plan) -> torch.Tensor:
    """(T, D) tokens -> (S, D) slots sorted by expert."""
    return _GatherRows.apply(x_TD, plan.order_S, plan.inverse_S, plan.top_k)


def permute_out(y_SD: torch.Tensor, plan: Plan) -> torch.Tensor:
    """(S, D) sorted slots -> (T, K, D) in token order."""
    y = _Permute.apply(y_SD, plan.inverse_S, plan.order_S)
    return y.view(-1, plan.top_k, y.shape[-1])


def grouped_mm_supported(x: torch.Tensor, w: torch.Tensor) -> bool:
    """torch's grouped_mm kernels: bf16 with 16-byte aligned rows; CUDA needs SM80+."""
    if not hasattr(F, "grouped_mm") and not hasattr(torch, "_grouped_mm"):
        return False
    if x.dtype != torch.bfloat16 or w.dtype != torch.bfloat16:
        return False
    if (x.shape[-1] * 2) % 16 or (w.shape[-1] * 2) % 16:
        return False
    if x.is_cuda:
        return torch.cuda.get_device_capability(x.device)[0] >= 8
    return x.device.type == "cpu"


class _GroupedLinearLoop(torch.autograd.Function):
    """Per-group GEMMs into preallocated buffers, with a hand-written backward.

    Autograd of slicing + cat would materialise a zero-filled full-size gradient per group and per
    weight slice (measured: ~40% of the CPU step); this writes each group's gradient in place.
    Host-side group sizes: used on CPU and as the fallback where grouped_mm is unavailable.
    """

    @staticmethod
    def forward(ctx, x_SD, w_EDH, b_EH, sizes: list[int]):
        ctx.save_for_backward(x_SD, w_EDH)
        ctx.sizes, ctx.has_bias = sizes, b_EH is not None
        y_SH = x_SD.new_empty(x_SD.shape[0], w_EDH.shape[-1])
        start = 0
        for e, n in enumerate(sizes):
            if n:
                seg = slice(start, start + n)
                if b_EH is not None:
                    torch.addmm(b_EH[e], x_SD[seg], w_EDH[e], out=y_SH[seg])
                else:
                    torch.mm(x_SD[seg], w_EDH[e], out=y_SH[seg])
            start += n
        return y_SH

    @staticmethod
    def backward(ctx, g_SH):
        x_SD, w_EDH = ctx.saved_tensors
        g_SH = g_SH.contiguous()
        gx = torch.empty_like(x_SD) if ctx.needs_input_grad[0] else None
        gw = torch.zeros_like(w_EDH) if ctx.needs_input_grad[1] else None
        gb = g_SH.new_zeros(w_EDH.shape[0], w_EDH.shape[-1]) if ctx.has_bias and ctx.needs_input_grad[2] else None
        start = 0
        for e, n in enumerate(ctx.sizes):
            if n:
                seg = slice(start, start + n)
                if gx is not None:
                    torch.mm(g_SH[seg], w_EDH[e].t(), out=gx[seg])
                if gw is not None:
                    torch.mm(x_SD[seg].t(), g_SH[seg], out=gw[e])
                if gb is not None:
                    torch.sum(g_SH[seg], dim=0, out=gb[e])
            start += n
        return gx, gw, gb, None


class _SegmentBias(torch.autograd.Function):
    """b[expert of each sorted slot]; backward sums each expert's contiguous segment
    (segment_reduce: no atomics, no host sync), instead of index_add's contended atomics."""

    @staticmethod
    def forward(ctx, b_EH, expert_sorted_S, counts_E):
        ctx.save_for_backward(counts_E)
        return b_EH.index_select(0, expert_sorted_S)

    @staticmethod
    def backward(ctx, g_SH):
        (counts_E,) = ctx.saved_tensors
        gb = torch.segment_reduce(g_SH, "sum", lengths=counts_E, axis=0, unsafe=True)
        return gb, None, None


def grouped_linear(x_SD: torch.Tensor, w_EDH: torch.Tensor, b_EH: torch.Tensor | None, plan: Plan) -> torch.Tensor:
    """Row group e of x (sorted slots of expert e) times w[e] (+ b[e])."""
    if grouped_mm_supported(x_SD, w_EDH):
        fn = getattr(F, "grouped_mm", None) or torch._grouped_mm
        y = fn(x_SD, w_EDH, offs=plan.offsets_E)
        if b_EH is not None:
            y = y + _SegmentBias.apply(b_EH, plan.expert_sorted_S, plan.counts_E)
        return y
    # Fallback (CPU fp32, pre-SM80 GPUs): needs the group sizes on the host (a sync on CUDA).
    return _GroupedLinearLoop.apply(x_SD, w_EDH, b_EH, plan.counts_E.tolist())
