"""Dropless token dispatch for the "grouped" path: sort slots by expert once, run both expert
GEMMs on the contiguous groups, and combine with one gather that also applies the gates.

    plan    = make_plan(expert_ids_TK)             argsort once; inverse by scatter
    x_SD    = permute_in(x_TD, plan)                (T, D) -> (S, D) sorted by expert
    h_SH    = act(grouped_linear(x_SD, w1, b1))     both GEMMs share the plan
    y_SD    = grouped_linear(h_SH, w2, b2)
    out_TD  = combine(y_SD, gates_TK, plan)         sum_k gate[t,k] * y[slot(t,k)]   (TrajMoE paper eq. 2)

Every permutation is a gather whose backward is another gather with the precomputed inverse
index (no atomic index_add / scatter_add in backward). On CUDA nothing reads counts back to the
host on the bf16 grouped_mm path (no .item(), .tolist(), nonzero or bincount), so it is free of
host-device synchronisation; the fp32 per-group fallback needs the group sizes on the host.
Legend: T tokens, K chosen experts per token, S = T*K token slots, D/H dims, E experts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Plan:
    """A routing plan shared by both expert GEMMs and the combine of one layer call."""

    order_S: torch.Tensor  # slot ids sorted by expert (stable)
    inverse_S: torch.Tensor  # inverse permutation: sorted position of each slot
    expert_sorted_S: torch.Tensor  # expert id of each sorted slot
    counts_E: torch.Tensor  # slots per expert (int64)
    offsets_E: torch.Tensor  # cumulative counts, int32 (grouped_mm's `offs`)
    top_k: int
    _sizes: list[int] | None = field(default=None, repr=False)

    def host_sizes(self) -> list[int]:
        """Group sizes as Python ints, read once per plan (a host sync on CUDA: fallback only)."""
        if self._sizes is None:
            self._sizes = self.counts_E.tolist()
        return self._sizes


def make_plan(expert_ids_TK: torch.Tensor, num_experts: int) -> Plan:
    """Sort the S = T*K token slots by expert once; every later permutation reuses this plan.

    Args:
        expert_ids_TK: (T, K) int64 expert id of each token's k-th choice, in [0, E).
        num_experts: E.

    Returns:
        A `Plan`: stable sort order (S,), its inverse (S,), the expert of each sorted slot (S,),
        slots per expert counts_E (E,) int64 and cumulative offsets_E (E,) int32.
    """
    flat_S = expert_ids_TK.reshape(-1)
    order_S = torch.argsort(flat_S, stable=True)
    # inverse[order[i]] = i: one scatter_ kernel (sync-free on CUDA)
    inverse_S = torch.empty_like(order_S).scatter_(0, order_S, torch.arange(order_S.numel(), device=order_S.device))
    expert_sorted_S = flat_S.index_select(0, order_S)
    # group ends by binary search on the sorted ids: no atomics, no host sync (bincount syncs on CUDA)
    experts_E = torch.arange(num_experts, device=flat_S.device, dtype=flat_S.dtype)
    ends_E = torch.searchsorted(expert_sorted_S, experts_E, right=True)
    counts_E = torch.diff(ends_E, prepend=ends_E.new_zeros(1))
    return Plan(order_S, inverse_S, expert_sorted_S, counts_E, ends_E.to(torch.int32), expert_ids_TK.shape[-1])


# ---------------------------------------------------------------------------------- permutations


class _GatherRows(torch.autograd.Function):
    """y = x[order // k]; backward: grad_x = grad_y[inverse].view(T, k, D).sum(1) (no atomics)."""

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


class _Combine(torch.autograd.Function):
    """out[t] = sum_k gate[t, k] * y[inverse[t*K + k]]: un-sort, gate and sum over K in one pass.

    Replaces gather -> (T,K,D) * gate -> sum(K) (three (S, D) passes forward, four backward).
    backward, all in sorted order (gathers only):
      grad_y[s]    = gate_sorted[s] * g[order[s] // K]
      grad_gate[s] = <g[order[s] // K], y[s]>   then un-sorted with `inverse`
    """

    @staticmethod
    def forward(ctx, y_SD, gates_TK, order_S, inverse_S):
        T, K = gates_TK.shape
        gates = gates_TK.to(y_SD.dtype)
        y_tok_SD = y_SD.index_select(0, inverse_S)  # token-major slots (T*K, D)
        if K == 1:
            out_TD = y_tok_SD.mul_(gates)  # fresh gather result: scale in place
        else:  # (T,1,K) @ (T,K,D): one pass, fp32 accumulation inside the kernel
            out_TD = torch.bmm(gates.unsqueeze(1), y_tok_SD.view(T, K, -1)).squeeze(1)
        ctx.save_for_backward(y_SD, gates_TK, order_S, inverse_S)
        ctx.k = K
        return out_TD

    @staticmethod
    def backward(ctx, g_TD):
        y_SD, gates_TK, order_S, inverse_S = ctx.saved_tensors
        k = ctx.k
        g_SD = g_TD.index_select(0, order_S // k if k > 1 else order_S)  # (S, D) sorted order
        grad_y = grad_gates = None
        if ctx.needs_input_grad[1]:
            dot_S = torch.linalg.vecdot(g_SD, y_SD.to(g_SD.dtype))  # (S,)
            grad_gates = dot_S.index_select(0, inverse_S).view_as(gates_TK).to(gates_TK.dtype)
        if ctx.needs_input_grad[0]:
            gate_S = gates_TK.reshape(-1).index_select(0, order_S).to(g_SD.dtype)
            grad_y = g_SD.mul_(gate_S.unsqueeze(-1)).to(y_SD.dtype)  # g_SD is a fresh gather
        return grad_y, grad_gates, None, None


def permute_in(x_TD: torch.Tensor, plan: Plan) -> torch.Tensor:
    """(T, D) tokens -> (S, D) slots sorted by expert."""
    return _GatherRows.apply(x_TD, plan.order_S, plan.inverse_S, plan.top_k)


def combine(y_SD: torch.Tensor, gates_TK: torch.Tensor, plan: Plan) -> torch.Tensor:
    """(S, D) sorted expert outputs -> (T, D) = sum_k gates[t, k] * y(t, k), in y's dtype
    (TrajMoE paper eq. 2); gates_TK (T, K) are the router's gate weights."""
    return _Combine.apply(y_SD, gates_TK, plan.order_S, plan.inverse_S)


# ---------------------------------------------------------------------------------- grouped GEMM


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
                if b_EH is not None:  # bias folded into the GEMM (addmm: beta * b + x @ w)
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
        gw = torch.empty_like(w_EDH) if ctx.needs_input_grad[1] else None
        gb = g_SH.new_empty(w_EDH.shape[0], w_EDH.shape[-1]) if ctx.has_bias and ctx.needs_input_grad[2] else None
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
            else:  # an expert without tokens gets an exact zero gradient
                if gw is not None:
                    gw[e].zero_()
                if gb is not None:
                    gb[e].zero_()
            start += n
        return gx, gw, gb, None


class _SegmentBias(torch.autograd.Function):
    """y + b[expert of each sorted slot], in place on y (the fresh grouped_mm output, which
    grouped_mm's backward does not need); backward sums each expert's contiguous segment
    (segment_reduce: no atomics, no host sync) instead of index_add's contended atomics."""

    @staticmethod
    def forward(ctx, y_SH, b_EH, expert_sorted_S, counts_E):
        ctx.save_for_backward(counts_E)
        ctx.mark_dirty(y_SH)
        return y_SH.add_(b_EH.index_select(0, expert_sorted_S))

    @staticmethod
    def backward(ctx, g_SH):
        (counts_E,) = ctx.saved_tensors
        gb = segment_sum(g_SH, counts_E) if ctx.needs_input_grad[1] else None
        return g_SH, gb, None, None


def host_sync_free(t: torch.Tensor) -> bool:
    """True where reading a tensor's values on the host would stall the device (CUDA): code
    paths taken then must stay on the device. A function so tests can force them on CPU."""
    return t.is_cuda


def segment_sum(g_SH: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
    """(E, H) sums of the E contiguous row segments of g (lengths counts_E; empty -> 0)."""
    if host_sync_free(g_SH):  # segment_reduce: no atomics, no host sync
        return torch.segment_reduce(g_SH, "sum", lengths=counts_E, axis=0, unsafe=True)
    # CPU: segment_reduce is ~15x slower than per-group sums, and reading counts costs nothing
    return torch.stack([seg.sum(0) for seg in g_SH.split(counts_E.tolist())])


def grouped_linear(x_SD: torch.Tensor, w_EDH: torch.Tensor, b_EH: torch.Tensor | None, plan: Plan) -> torch.Tensor:
    """Row group e of x (sorted slots of expert e) times w[e] (+ b[e]): x_SD (S, D), w_EDH (E, D, H),
    b_EH (E, H) or None -> (S, H). torch's grouped_mm where `grouped_mm_supported`, else per-group GEMMs."""
    if grouped_mm_supported(x_SD, w_EDH):
        fn = getattr(F, "grouped_mm", None) or torch._grouped_mm
        y = fn(x_SD, w_EDH, offs=plan.offsets_E)
        if b_EH is not None:
            y = _SegmentBias.apply(y, b_EH, plan.expert_sorted_S, plan.counts_E)
        return y
    # Fallback (CPU fp32, pre-SM80 GPUs): needs the group sizes on the host (a sync on CUDA).
    return _GroupedLinearLoop.apply(x_SD, w_EDH, b_EH, plan.host_sizes())
