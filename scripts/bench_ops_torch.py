#!/usr/bin/env python3
"""Time four DeepSeek operations in eager PyTorch as the baseline for `saturn bench-op`.

    python3 scripts/bench_ops_torch.py mla-decode [--batch 64] [--context 4096] [--queries 1]
        [--heads 128] [--latent 512] [--rope 64] [COMMON]
    python3 scripts/bench_ops_torch.py grouped-experts [--tokens 64] [--hidden 7168] [--inner 2048]
        [--experts 256] [--top-k 8] [--shared 2048] [COMMON]
    python3 scripts/bench_ops_torch.py linear [--tokens 4096] [--input 7168] [--output 2048]
        [COMMON]
    python3 scripts/bench_ops_torch.py matmul [--batch 128] [--rows 1024] [--inner 192] [--cols 1024]
        [COMMON]
    python3 scripts/bench_ops_torch.py {mla-decode,grouped-experts,linear,matmul} --self-check
        [--dtype float32] [--device cpu]
COMMON: [--dtype {float32,bfloat16}] [--repeat 20] [--device cuda] [--json]

`saturn bench-op` times saturn's kernels for the same ops, shapes and layout on the same GPU; the
GPU check script runs both and compares the medians. --dtype float32 (the default): true float32
math (no TF32), as saturn's f32 kernels. --dtype bfloat16: the same float32 data (same seed and
values) is converted to bf16 before timing, activations and weights alike, so every variant runs
in bf16 (PyTorch's bf16 products are cuBLAS bf16 GEMMs accumulating in f32), and bytes count 2
per element instead of 4; the routing weights of grouped-experts stay float32 data, cast to bf16
where they scale the expert outputs.
mla-decode: latent attention, q_latent [B,H,S,C], q_rope [B,H,S,R], latent [B,T,C], k_pe [B,T,R]
-> [B,H,S,C], query s at position s+T-S; variants `matmul` (bmm, softmax, bmm) and `sdpa`.
grouped-experts: DeepSeek-V3 MoE MLPs, x [T,Hd], routing [T,E] (token t -> experts (t*k+j) mod E,
weight 1/k), w_gate/w_up [E,I,Hd], w_down [E,Hd,I], shared expert of width J; variants `eager`
(per-expert loop) and, on CUDA, `grouped_mm` (torch._grouped_mm; skipped if rejected).
linear: y = x @ w.T, x [tokens, input], w [output, input]; variants `linear` (F.linear) and
`matmul` (x @ w.t()). Its purpose: the GPU check compares saturn's tensor-core tiles (`saturn
bench-op linear --weights-dtype bf16`) with cuBLAS through PyTorch in bf16 (--dtype bfloat16), to
decide between mma tiles and cuBLAS by measurement.
matmul: y = a @ b over a batch, a [batch, rows, inner], b [batch, inner, cols] (both activations:
the prefill attention's products); variants `bmm` (torch.bmm) and `matmul` (a @ b): cuBLAS's
strided batches, against `saturn bench-op matmul` with and without --cublas.
Data: seed 0, on the device, activations U[-1,1), weights U[-1,1)*0.02. Timing: one run to check
that the variants agree (1e-3 relative in float32, 2e-2 in bf16), 3 warm-ups, then --repeat runs
(CUDA events / perf_counter), median.
--self-check compares every variant with float64 loops on tiny shapes (computed from the same,
possibly bf16-rounded, inputs): within 1e-4 relative in float32, 2e-2 in bfloat16.
Exit: 0 ok, 1 failure (out of memory, variants disagree, self-check failed), 2 bad arguments,
3 no (CUDA-capable) PyTorch in this Python.
"""
import argparse
import itertools
import json
import math
import platform
import statistics
import sys
import time

MLA_SCALE = 1 / math.sqrt(192)
WARMUP = 3
# Variants must agree this closely (relative to the largest output) before they are timed, and
# --self-check holds them this close to the float64 loops, per --dtype. bf16 keeps 8 significant
# bits (relative rounding 2^-9 = 2e-3) and rounds intermediates (scores, probabilities, the
# expert MLP's hidden activations) too: 2e-2 is a little above torch.testing's default bf16
# tolerance (rtol 1.6e-2).
AGREE_REL = {"float32": 1e-3, "bfloat16": 2e-2}
CHECK_REL = {"float32": 1e-4, "bfloat16": 2e-2}
torch = F = None  # imported in main(), so that a missing torch is one clear line, not a traceback


def rel_diff(got, ref):
    """Max abs difference relative to the reference's max magnitude."""
    got, ref = got.to(ref.device, torch.float64), ref.double()
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def uniform(shape, device, scale=1.0, dtype=None):
    """U[-1,1) * scale, filled in place on the device (no temporary the size of the tensor) in
    float32, then converted to dtype (bf16: the float32 temporary is freed on return); the values
    drawn do not depend on dtype."""
    t = torch.empty(shape, dtype=torch.float32, device=device).uniform_(-1, 1).mul_(scale)
    return t if dtype in (None, torch.float32) else t.to(dtype)


def mla_inputs(B, H, S, T, C, R, device, dtype=None):
    """The four mla-decode inputs, deterministic from seed 0."""
    torch.manual_seed(0)
    return (uniform((B, H, S, C), device, dtype=dtype), uniform((B, H, S, R), device, dtype=dtype),
            uniform((B, T, C), device, dtype=dtype), uniform((B, T, R), device, dtype=dtype))


def mla_variants(q_latent, q_rope, latent, k_pe):
    """[(name, fn)] for mla-decode. Views, the mask and SDPA's concatenated query/key are built
    here, outside the timed region (a cache kept for SDPA would already be in that layout)."""
    B, H, S, C = q_latent.shape
    T, R = latent.shape[1], k_pe.shape[2]
    # Heads and queries folded into rows: [B, H*S, C] @ [B, C, T] is one bmm over the shared
    # cache. latent.unsqueeze(1) broadcast over heads would make torch.matmul expand+reshape,
    # i.e. copy the cache H times (68 GB at the V3 defaults): a strawman, and an OOM on 80 GB.
    ql, qr = q_latent.reshape(B, H * S, C), q_rope.reshape(B, H * S, R)
    lat_t, kpe_t = latent.transpose(1, 2), k_pe.transpose(1, 2)
    pos = torch.arange(T, device=latent.device)
    allowed = pos[None, :] <= pos[:S, None] + (T - S)  # [S, T]: query s sees keys t <= s+T-S
    hidden = ~allowed

    def matmul():
        scores = (torch.matmul(ql, lat_t) + torch.matmul(qr, kpe_t)) * MLA_SCALE
        if S > 1:  # a single query sees every key
            scores = scores.view(B, H, S, T).masked_fill(hidden, float("-inf")).view(B, H * S, T)
        return torch.matmul(torch.softmax(scores, dim=-1), latent).view(B, H, S, C)

    q = torch.cat([q_latent, q_rope], dim=-1)
    # expand() views keep heads at stride 0 (no copy) and give SDPA's fused kernels equal B and H.
    k = torch.cat([latent, k_pe], dim=-1).unsqueeze(1).expand(B, H, T, C + R)
    v = latent.unsqueeze(1).expand(B, H, T, C)
    mask = allowed if 1 < S < T else None

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=S == T,
                                              scale=MLA_SCALE)

    try:  # private API, only used to report which SDPA kernel the dispatcher picks
        backend = torch.nn.attention.SDPBackend(torch._fused_sdp_choice(
            q, k, v, attn_mask=mask, is_causal=S == T, scale=MLA_SCALE)).name
    except Exception:  # informational only, and the API is private: never fail over it
        backend = "unknown"
    return [("matmul", matmul), ("sdpa", sdpa)], {"sdpa_backend": backend}


def routing_matrix(T, E, k, device):
    """Dense [T, E] routing shared with saturn: token t -> experts (t*k+j) mod E, weight 1/k."""
    experts = (torch.arange(T, device=device)[:, None] * k + torch.arange(k, device=device)) % E
    return torch.zeros(T, E, device=device).scatter_(1, experts, 1.0 / k)


def moe_inputs(T, Hd, I, E, k, J, device, dtype=None):
    """x, routing and the weights (one tensor at a time, filled in place, to keep peak low). The
    routing matrix stays float32 (it is data, not an activation)."""
    torch.manual_seed(0)
    x = uniform((T, Hd), device, dtype=dtype)
    experts = [uniform(shape, device, 0.02, dtype)
               for shape in ((E, I, Hd), (E, I, Hd), (E, Hd, I))]
    shared = [uniform(shape, device, 0.02, dtype)
              for shape in ((J, Hd), (J, Hd), (Hd, J))] if J else None
    return x, routing_matrix(T, E, k, device), experts, shared


def moe_variants(x, routing, experts, shared, with_grouped_mm):
    """[(name, fn)] for grouped-experts, and the number of distinct experts used. Grouping the
    tokens by expert (nonzero/argsort, per-expert index lists, offsets) happens here, outside the
    timed region: saturn receives the routing as data too."""
    w_gate, w_up, w_down = experts
    tokens, ids = routing.nonzero(as_tuple=True)
    order = torch.argsort(ids, stable=True)
    tokens, ids = tokens[order], ids[order]
    weights = routing[tokens, ids].unsqueeze(1).to(x.dtype)  # index_add_ needs y's dtype
    counts = torch.bincount(ids, minlength=routing.shape[1])
    sizes = counts.tolist()
    groups = [(e, idx, w) for e, (idx, w) in enumerate(zip(tokens.split(sizes),
                                                            weights.split(sizes))) if sizes[e]]

    def add_shared(y):
        if shared is None:
            return y
        ws_gate, ws_up, ws_down = shared
        return y.add_(F.linear(F.silu(F.linear(x, ws_gate)) * F.linear(x, ws_up), ws_down))

    def eager():
        y = torch.zeros_like(x)
        for e, idx, w in groups:
            xe = x.index_select(0, idx)
            h = F.silu(F.linear(xe, w_gate[e])) * F.linear(xe, w_up[e])
            y.index_add_(0, idx, F.linear(h, w_down[e]) * w)
        return add_shared(y)

    variants = [("eager", eager)]
    if with_grouped_mm:
        offs = counts.cumsum(0).to(torch.int32)
        # [E, Hd, I] / [E, I, Hd] views: column-major per expert, a layout _grouped_mm accepts.
        gate_t, up_t, down_t = (w.transpose(1, 2) for w in experts)

        def grouped_mm():
            xs = x.index_select(0, tokens)
            h = F.silu(torch._grouped_mm(xs, gate_t, offs)) * torch._grouped_mm(xs, up_t, offs)
            out = torch._grouped_mm(h, down_t, offs) * weights
            return add_shared(torch.zeros_like(x).index_add_(0, tokens, out))

        variants.append(("grouped_mm", grouped_mm))
    return variants, len(groups)


def linear_inputs(T, I, O, device, dtype=None):
    """x [T, I] and w [O, I], deterministic from seed 0."""
    torch.manual_seed(0)
    return uniform((T, I), device, dtype=dtype), uniform((O, I), device, 0.02, dtype)


def linear_variants(x, w):
    """[(name, fn)] for linear: y = x @ w.T, as F.linear and as a matmul with w's transposed
    view (both reach the same GEMM with w read transposed; no copy of w is made)."""
    w_t = w.t()
    return [("linear", lambda: F.linear(x, w)), ("matmul", lambda: torch.matmul(x, w_t))]


def matmul_inputs(B, M, K, N, device, dtype=None):
    """a [B, M, K] and b [B, K, N], deterministic from seed 0."""
    torch.manual_seed(0)
    return uniform((B, M, K), device, dtype=dtype), uniform((B, K, N), device, dtype=dtype)


def matmul_variants(a, b):
    """[(name, fn)] for the batched product y = a @ b."""
    return [("bmm", lambda: torch.bmm(a, b)), ("matmul", lambda: torch.matmul(a, b))]


def time_runs(fn, device, repeat):
    """Warm up, then time `repeat` runs; returns the seconds of each."""
    for _ in range(WARMUP):
        fn()
    seconds = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    for _ in range(repeat):
        if device.type == "cuda":  # GPU time between the events, launch gaps inside fn included
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - t0)
    return seconds


def run_variants(op, variants, device, repeat, optional, agree):
    """Run each variant once and exit 1 unless all agree with the first within `agree` (relative),
    then time them. A variant in `optional` that raises (rejected dtype, out of memory) is skipped
    with its reason."""
    skipped, ready, timed, ref = [], [], [], None

    def attempt(name, action):
        try:
            return action()
        except RuntimeError as err:  # torch.cuda.OutOfMemoryError is a RuntimeError too
            if name not in optional:
                raise
            skipped.append({"name": name, "reason": str(err).strip().splitlines()[0][:300]})
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return None

    for name, fn in variants:
        out = attempt(name, fn)
        if out is None:
            continue
        if ref is None:
            ref = (name, out)
        elif not rel_diff(out, ref[1]) <= agree:  # written so that NaN fails too
            sys.exit(f"bench_ops_torch: {op}: variants disagree: {name} vs {ref[0]} relative "
                     f"difference {rel_diff(out, ref[1]):.3g} > {agree}")
        ready.append((name, fn))
    ref = out = None  # free the outputs before timing
    for name, fn in ready:
        seconds = attempt(name, lambda: time_runs(fn, device, repeat))
        if seconds is not None:
            timed.append({"name": name, "seconds_median": statistics.median(seconds),
                          "seconds": seconds})
    return timed, skipped


def naive_mla(q_latent, q_rope, latent, k_pe):
    """Per-(b, h, s) float64 loop straight from the definition."""
    ql, qr, lat, kp = (t.double().cpu() for t in (q_latent, q_rope, latent, k_pe))
    B, H, S, C = ql.shape
    T = lat.shape[1]
    out = torch.zeros(B, H, S, C, dtype=torch.float64)
    for b, h, s in itertools.product(range(B), range(H), range(S)):
        n = s + T - S + 1  # keys 0 ..= the query's position
        scores = (lat[b, :n] @ ql[b, h, s] + kp[b, :n] @ qr[b, h, s]) * MLA_SCALE
        p = torch.exp(scores - scores.max())
        out[b, h, s] = (p / p.sum()) @ lat[b, :n]
    return out


def naive_moe(x, routing, experts, shared):
    """Per-token float64 loop straight from the definition."""
    x, routing = x.double().cpu(), routing.double().cpu()
    w_gate, w_up, w_down = (w.double().cpu() for w in experts)
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for e in range(routing.shape[1]):
            if routing[t, e] != 0:
                h = F.silu(w_gate[e] @ x[t]) * (w_up[e] @ x[t])
                y[t] += routing[t, e] * (w_down[e] @ h)
        if shared is not None:
            ws_gate, ws_up, ws_down = (w.double().cpu() for w in shared)
            y[t] += ws_down @ (F.silu(ws_gate @ x[t]) * (ws_up @ x[t]))
    return y


def naive_linear(x, w):
    """Per-(t, o) float64 dot products straight from the definition."""
    x, w = x.double().cpu(), w.double().cpu()
    out = torch.zeros(x.shape[0], w.shape[0], dtype=torch.float64)
    for t, o in itertools.product(range(x.shape[0]), range(w.shape[0])):
        out[t, o] = (x[t] * w[o]).sum()
    return out


def naive_matmul(a, b):
    """Each product of the batch as naive_linear's dot products: a[z] @ b[z] = a[z] @ (b[z].T).T."""
    return torch.stack([naive_linear(a[z], b[z].t()) for z in range(a.shape[0])])


def self_check(op, device, dtype, out):
    """Compare every variant with the float64 loops on tiny shapes; True if all within
    CHECK_REL[dtype] (1e-4 float32, 2e-2 bfloat16). The loops take the inputs as the variants see
    them (bf16-rounded in bfloat16), so the check measures the arithmetic, not the input rounding.
    _grouped_mm is checked on any device whose torch accepts it (it is timed on CUDA only)."""
    tol, tdtype = CHECK_REL[dtype], getattr(torch, dtype)
    cases = []  # (label, fn giving the result, float64 reference)
    if op == "mla-decode":
        for B, H, S, T, C, R in ((2, 3, 1, 7, 8, 4), (2, 3, 3, 9, 8, 4), (1, 2, 5, 5, 16, 8)):
            inputs = mla_inputs(B, H, S, T, C, R, device, tdtype)
            ref = naive_mla(*inputs)
            cases += [(f"{name} B={B} H={H} S={S} T={T}", fn, ref)
                      for name, fn in mla_variants(*inputs)[0]]
    elif op == "linear":
        for T, I, O in ((3, 5, 4), (7, 16, 9), (1, 33, 2)):
            x, w = linear_inputs(T, I, O, device, tdtype)
            ref = naive_linear(x, w)
            cases += [(f"{name} T={T} I={I} O={O}", fn, ref) for name, fn in linear_variants(x, w)]
    elif op == "matmul":
        for B, M, K, N in ((2, 3, 5, 4), (3, 7, 16, 9), (1, 1, 33, 2)):
            a, b = matmul_inputs(B, M, K, N, device, tdtype)
            ref = naive_matmul(a, b)
            cases += [(f"{name} B={B} M={M} K={K} N={N}", fn, ref) for name, fn in matmul_variants(a, b)]
    else:
        for T, Hd, I, E, k, J in ((5, 16, 8, 8, 2, 4), (3, 12, 8, 4, 3, 0), (1, 8, 4, 16, 2, 8)):
            x, routing, experts, shared = moe_inputs(T, Hd, I, E, k, J, device, tdtype)
            want = torch.zeros(T, E, dtype=torch.float64)
            for t, j in itertools.product(range(T), range(k)):
                want[t, (t * k + j) % E] = 1 / k
            cases.append((f"routing T={T} E={E} k={k}", lambda r=routing: r, want))
            ref = naive_moe(x, routing, experts, shared)
            variants, _ = moe_variants(x, routing, experts, shared, hasattr(torch, "_grouped_mm"))
            cases += [(f"{name} T={T} E={E} k={k} J={J}", fn, ref) for name, fn in variants]
    ok = True
    for label, fn, ref in cases:
        try:
            err = rel_diff(fn(), ref)
        except RuntimeError as error:  # e.g. a _grouped_mm that rejects these shapes or float32
            print(f"skip {op} {dtype} {label}: {str(error).strip().splitlines()[0]}", file=out)
            continue
        ok = ok and err <= tol  # written so that NaN fails too
        print(f"{'ok  ' if err <= tol else 'FAIL'} {op} {dtype} {label}: relative error "
              f"{err:.2e} (limit {tol:g})", file=out)
    return ok


def at_least(low):
    """argparse type: an integer >= low."""
    def integer(text):
        if int(text) < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return int(text)
    return integer


def parse_args():
    """The four subcommands, with sizes validated (argparse errors exit 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="activations and weights (default float32; bfloat16: the same "
                        "values converted to bf16, bytes counted at 2 per element)")
    common.add_argument("--repeat", type=at_least(1), default=20, help="timed runs (default 20)")
    common.add_argument("--device", choices=("cuda", "cpu"),
                        help="default: cuda if available, else cpu")
    common.add_argument("--json", action="store_true", help="one JSON object on stdout")
    common.add_argument("--self-check", action="store_true",
                        help="check against naive float64 loops on tiny shapes, exit 0/1")
    sub = parser.add_subparsers(dest="op", required=True)
    mla = sub.add_parser("mla-decode", parents=[common], help="latent attention decode")
    for flag, default in (("batch", 64), ("context", 4096), ("queries", 1), ("heads", 128),
                          ("latent", 512), ("rope", 64)):
        mla.add_argument(f"--{flag}", type=at_least(1), default=default)
    moe = sub.add_parser("grouped-experts", parents=[common], help="MoE expert MLPs")
    for flag, default in (("tokens", 64), ("hidden", 7168), ("inner", 2048), ("experts", 256),
                          ("top-k", 8)):
        moe.add_argument(f"--{flag}", type=at_least(1), default=default)
    moe.add_argument("--shared", type=at_least(0), default=2048, help="0: no shared expert")
    lin = sub.add_parser("linear", parents=[common], help="y = x @ w.T (a prefill product)")
    for flag, default in (("tokens", 4096), ("input", 7168), ("output", 2048)):
        lin.add_argument(f"--{flag}", type=at_least(1), default=default)
    mm = sub.add_parser("matmul", parents=[common], help="y = a @ b over a batch (attention)")
    for flag, default in (("batch", 128), ("rows", 1024), ("inner", 192), ("cols", 1024)):
        mm.add_argument(f"--{flag}", type=at_least(1), default=default)
    args = parser.parse_args()
    if args.op == "mla-decode" and args.queries > args.context:
        mla.error("--queries must not exceed --context (the context includes the queries)")
    if args.op == "grouped-experts" and args.top_k > args.experts:
        moe.error("--top-k must not exceed --experts")
    return args


def main():
    """Parse, import torch, then self-check or benchmark the chosen op."""
    global torch, F
    args = parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print(f"bench_ops_torch: PyTorch is not installed in {sys.executable}; run this script "
              "with a Python that has torch (e.g. .venv-bench/bin/python)", file=sys.stderr)
        sys.exit(3)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():  # as good as no PyTorch here
        print(f"bench_ops_torch: torch {torch.__version__} in {sys.executable} cannot use CUDA "
              "(CPU-only build, or no GPU visible)", file=sys.stderr)
        sys.exit(3)
    device = torch.device(args.device)
    torch.set_float32_matmul_precision("highest")  # true float32, no TF32: same math as saturn
    out = sys.stderr if args.json else sys.stdout
    with torch.inference_mode():
        if args.self_check:
            sys.exit(0 if self_check(args.op, device, args.dtype, out) else 1)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
            platform.processor() or platform.machine())
        print(f"{args.op}: torch {torch.__version__}, device {device} ({name}), {args.dtype}",
              file=out)
        try:
            report = bench(args, device, out)
        except torch.cuda.OutOfMemoryError as err:
            sys.exit(f"bench_ops_torch: {args.op}: CUDA out of memory; inputs and weights need "
                     f"{args.input_bytes} bytes ({args.input_bytes / 2**30:.1f} GiB) on {name}; "
                     f"torch: {str(err).splitlines()[0][:200]}")
    report = {"op": args.op, "device": str(device), "device_name": name,
              "torch_version": torch.__version__, "dtype": args.dtype,
              "float32_matmul_precision": torch.get_float32_matmul_precision(),
              "warmup": WARMUP, "repeat": args.repeat, "agree_rel": AGREE_REL[args.dtype],
              **report}
    if args.dtype == "bfloat16":  # PyTorch's default (True) lets cuBLAS reduce split-K in bf16
        report["bf16_reduced_precision_reduction"] = (
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)
    for v in report["variants"]:
        of = " of weights" if args.op == "grouped-experts" else ""
        rate = f"{v['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s" + (
            f"{of}, {v['flops_per_s'] / 1e9:.1f} GFLOP/s" if "flops_per_s" in v else "")
        print(f"  {v['name']:<11} median {v['seconds_median'] * 1e3:9.3f} ms  "
              f"(min {min(v['seconds']) * 1e3:.3f}, max {max(v['seconds']) * 1e3:.3f})  {rate}",
              file=out)
    for s in report["skipped"]:
        print(f"  {s['name']:<11} skipped: {s['reason']}", file=out)
    print(f"  best: {report['best']}", file=out)
    if args.json:
        print(json.dumps(report))


def bench(args, device, out):
    """Allocate the inputs, time the variants, and return the op-specific report fields. Bytes
    count `es` bytes per element of the timed dtype (4 float32, 2 bfloat16)."""
    dtype = getattr(torch, args.dtype)
    es = torch.empty((), dtype=dtype).element_size()
    agree = AGREE_REL[args.dtype]
    if args.op == "mla-decode":
        B, H, S, T, C, R = (args.batch, args.heads, args.queries, args.context, args.latent,
                            args.rope)
        nbytes = es * (B * H * S * C + B * H * S * R + B * T * C + B * T * R + B * H * S * C)
        args.input_bytes = nbytes - es * B * H * S * C
        variants, extra = mla_variants(*mla_inputs(B, H, S, T, C, R, device, dtype))
        print(f"  sdpa backend chosen by the dispatcher: {extra['sdpa_backend']}", file=out)
        timed, skipped = run_variants(args.op, variants, device, args.repeat, {"sdpa"}, agree)
        for v in timed:
            v["bandwidth_bytes_per_s"] = nbytes / v["seconds_median"]
        shapes = {"batch": B, "heads": H, "queries": S, "context": T, "latent": C, "rope": R}
        extra.update(bytes=nbytes, timed_region="the attention only; inputs, views, mask and "
                     "SDPA's concatenated query/key are prepared before timing")
    elif args.op == "linear":
        T, I, O = args.tokens, args.input, args.output
        args.input_bytes = es * (T * I + O * I)
        flops, nbytes = 2 * T * I * O, es * (T * I + O * I + T * O)
        variants = linear_variants(*linear_inputs(T, I, O, device, dtype))
        timed, skipped = run_variants(args.op, variants, device, args.repeat, set(), agree)
        for v in timed:  # bandwidth: x, w read and y written once, per second
            v["flops_per_s"] = flops / v["seconds_median"]
            v["bandwidth_bytes_per_s"] = nbytes / v["seconds_median"]
        shapes = {"tokens": T, "input": I, "output": O}
        extra = {"flops": flops, "bytes": nbytes,
                 "timed_region": "the product only (y allocated inside); x and w prepared before"}
    elif args.op == "matmul":
        B, M, K, N = args.batch, args.rows, args.inner, args.cols
        args.input_bytes = es * B * (M * K + K * N)
        flops, nbytes = 2 * B * M * K * N, es * B * (M * K + K * N + M * N)
        variants = matmul_variants(*matmul_inputs(B, M, K, N, device, dtype))
        timed, skipped = run_variants(args.op, variants, device, args.repeat, set(), agree)
        for v in timed:  # bandwidth: a, b read and y written once, per second
            v["flops_per_s"] = flops / v["seconds_median"]
            v["bandwidth_bytes_per_s"] = nbytes / v["seconds_median"]
        shapes = {"batch": B, "rows": M, "inner": K, "cols": N}
        extra = {"flops": flops, "bytes": nbytes,
                 "timed_region": "the product only (y allocated inside); a and b prepared before"}
    else:
        T, Hd, I, E, k, J = (args.tokens, args.hidden, args.inner, args.experts, args.top_k,
                             args.shared)
        allocated = es * (3 * E * I * Hd + 3 * J * Hd)
        args.input_bytes = allocated + es * T * Hd + 4 * T * E  # the routing stays float32
        print(f"  allocating {allocated} bytes ({allocated / 2**30:.2f} GiB) for weights", file=out)
        x, routing, experts, shared = moe_inputs(T, Hd, I, E, k, J, device, dtype)
        use_gmm = hasattr(torch, "_grouped_mm") and device.type == "cuda"
        variants, used = moe_variants(x, routing, experts, shared, use_gmm)
        timed, skipped = run_variants(args.op, variants, device, args.repeat, {"grouped_mm"},
                                      agree)
        if not use_gmm:
            skipped.append({"name": "grouped_mm", "reason": "CUDA only" if hasattr(
                torch, "_grouped_mm") else "this torch has no torch._grouped_mm"})
        flops = 2 * 3 * T * k * Hd * I + 2 * 3 * T * Hd * J
        weight_bytes = es * 3 * Hd * I * used + es * 3 * Hd * J
        for v in timed:  # bandwidth: the weight bytes of the used experts per second
            v["flops_per_s"] = flops / v["seconds_median"]
            v["bandwidth_bytes_per_s"] = weight_bytes / v["seconds_median"]
        shapes = {"tokens": T, "hidden": Hd, "inner": I, "experts": E, "top_k": k, "shared": J}
        extra = {"flops": flops, "weight_bytes": weight_bytes, "experts_used": used,
                 "weight_bytes_allocated": allocated,
                 "timed_region": "expert MLPs from per-expert token lists: gather (index_select),"
                 " gate/up/silu/down, routing-weight scale, index_add_ into a zeroed y, shared "
                 "expert; routing->index lists/offsets precomputed outside the timed region"}
    best = min(timed, key=lambda v: v["seconds_median"])["name"]
    return {"shapes": shapes, "variants": timed, "skipped": skipped, "best": best, **extra}


if __name__ == "__main__":
    main()
