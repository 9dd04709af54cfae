#!/usr/bin/env bash
# The GPU checks of the CUDA backend, in one run, on a machine with an NVIDIA GPU and a CUDA 13.0
# toolkit (NVRTC + ptxas), for example the lent H100/H200 machines:
#   1. the tiny fixtures through `--backend cuda`: prefill and decode logits against Hugging Face's
#      (tests/fixtures/*/reference.safetensors, limit 1e-4) and greedy ids exactly;
#   2. bf16 weights: the fixtures' logits on the GPU against the cpu backend's with the same
#      bf16-rounded weights (limit 1e-4), and with --tensor-cores (products and attention on
#      tensor cores, a bf16 KV cache: each position's top token in the other's top 5, the
#      median position within 1.6e-2 of the largest logit);
#   cublas: --cublas (prefill products with weights in cuBLAS): the fixtures as in 1 and 2,
#      and `saturn bench` of the default model, f32 and bf16 on tensor cores;
#   3. `saturn bench` on the GPU (f32, then bf16 on tensor cores) and on the CPU for the shipped
#      default model (JSON);
#   mid: the decode step of a real-sized model: the mid-size random DeepSeek-V3-style model of
#      scripts/bench_transformers.py (816M parameters, 3.3 GB, made by transformers into
#      $MID_DIR, default target/bench-models/deepseek-v3-mid), timed with `saturn bench
#      --backend cuda` (f32, then bf16 on tensor cores) and with transformers on the same GPU in
#      float32 and bfloat16 (scripts/bench_transformers_worker.py --device cuda), greedy ids
#      compared in f32 (on a GPU only: BACKEND=cuda-emulator skips it);
#   4. `saturn bench-op` at DeepSeek-V3 layer shapes: mla-decode (batch 64, context 4096: its
#      traffic against the GPU's copy bandwidth), grouped-experts (64 and 512 tokens) and a
#      prefill-sized linear (4096 x 7168 -> 2048), each in f32 and in bf16 on tensor cores
#      (linear also through --cublas), and the prefill attention's batched matmul (128 heads of
#      1024 x 192 by 192 x 1024: f32 with and without --cublas, bf16 through it), checked against the CPU
#      backend at a size the check can afford;
#      then the same problems in PyTorch on the same GPU (scripts/bench_ops_torch.py), in
#      float32 and bfloat16, where PyTorch is installed: its bf16 products are cuBLAS, so the
#      linear pair decides between saturn's tensor-core tiles and cuBLAS by measurement.
# It needs a built saturn (`cargo build --release` here; on a machine without Rust, build
# elsewhere and bring target/release/saturn) and python3 with numpy and safetensors.
# Results go to ${OUT:-target/gpu-check}. Usage: scripts/gpu-check.sh [SATURN_BINARY]
# BACKEND=cuda-emulator runs the same checks on the CPU emulator (no GPU; slow, for the script;
# the op benchmarks then run at small shapes). PYTHON picks the interpreter for PyTorch.
# SECTIONS="fixtures bf16 cublas bench mid ops torch" (the default) names the parts to run, and
# OPS="mla experts linear matmul" the op groups of `ops` and `torch`, so a long check can be split
# across several runs (each keeps its files in $OUT). Each section's header gives the seconds
# since the start, so a run shows what each part costs.
# What the H100 run of 2026-11-23 measured is in BENCHMARKS.md; what has not run on a GPU yet
# is --cublas. Where device time is short (one command of under 10 minutes), that is:
#   SECTIONS="fixtures cublas ops torch mid" OPS="linear matmul" scripts/gpu-check.sh target/release/saturn
set -euo pipefail
cd "$(dirname "$0")/.."
SATURN="${1:-target/release/saturn}"
BACKEND="${BACKEND:-cuda}"
OUT="${OUT:-target/gpu-check}"
mkdir -p "$OUT"
if [ -z "${SATURN_CUDA_HOME:-}" ]; then
  for d in /usr/local/cuda /usr/local/cuda-13.0 .cuda-tools/nvidia/cu13; do
    if [ -x "$d/bin/ptxas" ]; then SATURN_CUDA_HOME="$d"; break; fi
  done
fi
export SATURN_CUDA_HOME="${SATURN_CUDA_HOME:?no CUDA toolkit found: set SATURN_CUDA_HOME}"
# --cublas needs libcublas.so.13: beside NVRTC in the toolkit, else the loader finds it through
# LD_LIBRARY_PATH, here from the nvidia-cublas wheel PyTorch brings where the toolkit has none.
if ! ls "$SATURN_CUDA_HOME"/lib*/libcublas.so.13 > /dev/null 2>&1; then
  CUBLAS_DIR=$("${PYTHON:-python3}" - <<'PY' || true
import glob, os, site
for d in site.getsitepackages():
    for p in sorted(glob.glob(os.path.join(d, "nvidia", "**", "libcublas.so.13"), recursive=True)):
        print(os.path.dirname(p))
        raise SystemExit
PY
)
  if [ -n "$CUBLAS_DIR" ]; then export LD_LIBRARY_PATH="$CUBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
fi
# SECTIONS picks what runs (default: all), e.g. SECTIONS="ops torch" to rerun the benchmarks.
SECTIONS="${SECTIONS:-fixtures bf16 cublas bench mid ops torch}"
wants() { [[ " $SECTIONS " == *" $1 "* ]]; }
# OPS picks the op groups of `ops` and `torch` (default all), e.g. OPS=linear to time only the
# products: one command stays within a time limit.
OPS="${OPS:-mla experts linear matmul}"
wants_op() { [[ " $OPS " == *" $1 "* ]]; }
echo "== [${SECONDS}s] GPU and tools (sections: $SECTIONS)" | tee -a "$OUT/log.txt"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  "$SATURN_CUDA_HOME/bin/ptxas" --version | tail -2; } | tee -a "$OUT/log.txt"

# Op benchmark shapes: DeepSeek-V3's on a GPU, small ones on the emulator.
if [ "$BACKEND" = cuda ]; then
  MLA=(--batch 64 --context 4096)
  EXPERTS=(--experts 256)
  TOKENS=(64 512)
  # The full expert weights make a CPU reference costly: the checked run has 16 experts.
  CHECKED=(--tokens 64 --experts 16)
  LINEAR=(--tokens 4096 --input 7168 --output 2048)
  MATMUL=(--batch 128 --rows 1024 --inner 192 --cols 1024)
  TORCH_DEVICE=cuda
else
  MLA=(--batch 2 --context 300 --heads 4 --latent 32 --rope 8)
  EXPERTS=(--experts 8 --hidden 64 --inner 32 --shared 16 --top-k 2)
  TOKENS=(5)
  CHECKED=(--tokens 5 "${EXPERTS[@]}")
  LINEAR=(--tokens 70 --input 64 --output 130)
  MATMUL=(--batch 2 --rows 70 --inner 33 --cols 50)
  TORCH_DEVICE=cpu
fi

fixtures() {  # fixtures [FLAGS...]: the tiny fixtures through $BACKEND (with FLAGS) against transformers
python3 - "$SATURN" "$OUT" "$BACKEND" "$@" <<'PY' | tee -a "$OUT/log.txt"
import subprocess, sys, numpy as np
from safetensors.numpy import load_file
saturn, out, backend, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
tag = "".join(f.strip("-") for f in flags)
worst = 0.0
for model in ["deepseek-v3-tiny", "deepseek-v2-lite-tiny"]:
    ref = load_file(f"tests/fixtures/{model}/reference.safetensors")
    ids, dec = ref["input_ids"], ref["decode_ids"]
    rows, s = ids.shape
    vocab = ref["logits"].size // (rows * s)
    for row in range(rows):
        path = f"{out}/{model}-row{row}{tag}.safetensors"
        subprocess.run([saturn, "eval", f"models/{model}", "--backend", backend, *flags,
                        "--ids", ",".join(map(str, ids[row])), "--decode-ids", ",".join(map(str, dec[row])),
                        "--out", path], check=True)
        got = load_file(path)
        for name in ["logits", "decode_logits"]:
            want = ref[name].reshape(rows, -1, vocab)[row]
            err = float(np.abs(got[name] - want).max())
            worst = max(worst, err)
            print(f"{model} row {row} {name} {' '.join(flags)}: max abs error {err:.3e}")
    greedy = ref["greedy_ids"].reshape(-1)[s:]
    run = subprocess.run([saturn, "generate", f"models/{model}", "--backend", backend, *flags, "--ids",
                          ",".join(map(str, ids[0])), "--max-new-tokens", str(len(greedy))],
                         check=True, capture_output=True, text=True)
    got = [int(t) for t in run.stdout.strip().split(",")]
    print(f"{model} greedy ids {'match' if got == list(greedy) else 'DIFFER'}: {got}")
    assert got == list(greedy), "greedy ids differ"
assert worst <= 1e-4, f"max abs error {worst} > 1e-4"
print(f"worst error {worst:.3e} (limit 1e-4)")
PY
}

if wants fixtures; then
echo "== [${SECONDS}s] tiny fixtures against transformers" | tee -a "$OUT/log.txt"
fixtures
fi

bf16() {  # bf16 [FLAGS...]: bf16 weights on $BACKEND (tensor cores with FLAGS) against the cpu backend
python3 - "$SATURN" "$OUT" "$BACKEND" "$@" <<'PY' | tee -a "$OUT/log.txt"
import subprocess, sys, numpy as np
from safetensors.numpy import load_file
saturn, out, backend, flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
tag = "".join(f.strip("-") for f in flags)
worst, median_worst = 0.0, 0.0
for model in ["deepseek-v3-tiny", "deepseek-v2-lite-tiny"]:
    ref = load_file(f"tests/fixtures/{model}/reference.safetensors")
    ids, dec = ref["input_ids"][0], ref["decode_ids"][0]
    got = {}
    for name, args in [("cpu", ["--backend", "cpu"]), (backend, ["--backend", backend, *flags]),
                       ("tensor-cores", ["--backend", backend, "--tensor-cores", *flags])]:
        path = f"{out}/{model}-bf16-{name}{tag}.safetensors"
        subprocess.run([saturn, "eval", f"models/{model}", *args, "--weights-dtype", "bf16",
                        "--ids", ",".join(map(str, ids)), "--decode-ids", ",".join(map(str, dec)),
                        "--out", path], check=True)
        got[name] = load_file(path)
    for name in ["logits", "decode_logits"]:
        # bf16 weights alone: f32 arithmetic on the same rounded weights, within 1e-4.
        err = float(np.abs(got[backend][name] - got["cpu"][name]).max())
        worst = max(worst, err)
        print(f"{model} {name}: {backend} vs cpu with bf16 weights, max abs difference {err:.3e} (limit 1e-4)")
        # Tensor cores round activations and the KV cache to bf16, and an expert choice near a
        # tie may flip, moving that position (and, through attention, later ones) by far more
        # than the rounding: as tests/fixtures_match.rs checks, each position's top token must
        # be in the other side's top 5, and the median position within torch's bf16 tolerance,
        # 1.6e-2 of the largest logit.
        a, b = got["cpu"][name], got["tensor-cores"][name]
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        per = np.abs(a - b).max(axis=1)
        bound = 1.6e-2 * float(np.abs(a).max())
        median = float(np.median(per))
        print(f"{model} {name}: tensor cores {' '.join(flags)} vs cpu, median position {median:.3e} "
              f"(bound {bound:.3e}), worst {float(per.max()):.3e}")
        median_worst = max(median_worst, median / bound)
        top5 = lambda x: np.argsort(-x, axis=1, kind="stable")[:, :5]
        ta, tb = top5(a), top5(b)
        for p in range(a.shape[0]):
            assert ta[p, 0] in tb[p] and tb[p, 0] in ta[p], f"{model} {name} position {p}: top tokens differ"
assert worst <= 1e-4, f"max abs difference {worst} > 1e-4"
assert median_worst <= 1.0, f"a median difference exceeds its bound by {median_worst:.2f}x"
PY
}

if wants bf16; then
echo "== [${SECONDS}s] bf16 weights ($BACKEND, then tensor cores) against the cpu backend on the same rounded weights" | tee -a "$OUT/log.txt"
bf16
fi

if wants cublas; then
echo "== [${SECONDS}s] --cublas: prefill products with weights in cuBLAS (f32 against transformers, bf16 against the cpu backend)" | tee -a "$OUT/log.txt"
fixtures --cublas
bf16 --cublas
for precision in "" "--weights-dtype bf16 --tensor-cores"; do
  if [ -n "$precision" ]; then tag=-bf16; else tag=; fi
  # shellcheck disable=SC2086 # the precision flags are words
  "$SATURN" bench models/deepseek-v3-mini.toml --backend "$BACKEND" $precision --cublas \
    --prompt-tokens "${PROMPT:-64}" --decode-tokens "${DECODE:-64}" --json > "$OUT/bench-$BACKEND$tag-cublas.json"
  tee -a "$OUT/log.txt" < "$OUT/bench-$BACKEND$tag-cublas.json"
done
fi

if wants bench; then
echo "== [${SECONDS}s] saturn bench ($BACKEND, then cpu)" | tee -a "$OUT/log.txt"
for backend in "$BACKEND" cpu; do
  "$SATURN" bench models/deepseek-v3-mini.toml --backend "$backend" --prompt-tokens "${PROMPT:-64}" \
    --decode-tokens "${DECODE:-64}" --json > "$OUT/bench-$backend.json"
  tee -a "$OUT/log.txt" < "$OUT/bench-$backend.json"
done
# bf16: weights and the KV cache in bf16, products and attention on tensor cores.
"$SATURN" bench models/deepseek-v3-mini.toml --backend "$BACKEND" --weights-dtype bf16 --tensor-cores \
  --prompt-tokens "${PROMPT:-64}" --decode-tokens "${DECODE:-64}" --json > "$OUT/bench-$BACKEND-bf16.json"
tee -a "$OUT/log.txt" < "$OUT/bench-$BACKEND-bf16.json"
fi

if wants mid && [ "$BACKEND" != cuda ]; then
  echo "== [${SECONDS}s] the mid-size model: skipped on $BACKEND (816M parameters are for a GPU)" | tee -a "$OUT/log.txt"
elif wants mid; then
echo "== [${SECONDS}s] the mid-size model's prefill and decode: saturn ($BACKEND) and transformers on the same device" | tee -a "$OUT/log.txt"
PY="${PYTHON:-python3}"
MID="${MID_DIR:-target/bench-models/deepseek-v3-mid}"
"$PY" scripts/bench_transformers_worker.py create-mid "$MID" > /dev/null
# saturn bench's default prompt ids, (1 + 7919 i) mod vocab, for transformers too.
IDS=$("$PY" -c "print(','.join(str((1 + 7919 * i) % 32000) for i in range(${MID_PROMPT:-128})))")
MID_DECODE="${MID_DECODE:-32}"
"$SATURN" bench "$MID" --backend "$BACKEND" --ids "$IDS" --decode-tokens "$MID_DECODE" --json > "$OUT/mid-$BACKEND.json"
"$SATURN" bench "$MID" --backend "$BACKEND" --weights-dtype bf16 --tensor-cores --ids "$IDS" \
  --decode-tokens "$MID_DECODE" --json > "$OUT/mid-$BACKEND-bf16.json"
"$SATURN" bench "$MID" --backend "$BACKEND" --cublas --ids "$IDS" --decode-tokens "$MID_DECODE" \
  --json > "$OUT/mid-$BACKEND-cublas.json"
"$SATURN" bench "$MID" --backend "$BACKEND" --weights-dtype bf16 --tensor-cores --cublas --ids "$IDS" \
  --decode-tokens "$MID_DECODE" --json > "$OUT/mid-$BACKEND-bf16-cublas.json"
for dtype in float32 bfloat16; do
  "$PY" scripts/bench_transformers_worker.py bench "$MID" --ids "$IDS" --decode-tokens "$MID_DECODE" \
    --threads "$(nproc)" --device "$TORCH_DEVICE" --dtype "$dtype" > "$OUT/mid-torch-$dtype.json"
done
"$PY" - "$OUT" "$BACKEND" <<'PY' | tee -a "$OUT/log.txt"
import json, sys
out, backend = sys.argv[1], sys.argv[2]
load = lambda name: json.load(open(f"{out}/{name}.json"))
pairs = [("f32", load(f"mid-{backend}"), load("mid-torch-float32")),
         ("bf16", load(f"mid-{backend}-bf16"), load("mid-torch-bfloat16")),
         ("f32 --cublas", load(f"mid-{backend}-cublas"), load("mid-torch-float32")),
         ("bf16 --cublas", load(f"mid-{backend}-bf16-cublas"), load("mid-torch-bfloat16"))]
for name, ours, theirs in pairs:
    print(f"mid {name}: prefill {ours['prefill_tokens_per_s']:.0f} vs {theirs['prefill_tokens_per_s']:.0f} "
          f"tokens/s ({ours['prefill_tokens_per_s'] / theirs['prefill_tokens_per_s']:.2f}x), decode "
          f"{ours['decode_tokens_per_s']:.0f} vs {theirs['decode_tokens_per_s']:.0f} tokens/s "
          f"({ours['decode_tokens_per_s'] / theirs['decode_tokens_per_s']:.2f}x); load {ours['load_seconds']:.1f} s")
for name, ours, theirs in [pairs[0], pairs[2]]:
    ours, theirs = ours["generated_ids"], theirs["greedy_ids"]
    same = ours[: len(theirs)] == theirs
    print(f"mid {name} greedy ids {'match' if same else 'DIFFER'} transformers'")
PY
fi

if wants ops; then
echo "== [${SECONDS}s] op benchmarks ($BACKEND)" | tee -a "$OUT/log.txt"
op() {  # op NAME ARGS...: one saturn bench-op run, its JSON kept and logged
  local name="$1"; shift
  "$SATURN" bench-op "$@" --backend "$BACKEND" --json > "$OUT/op-$name.json"
  tee -a "$OUT/log.txt" < "$OUT/op-$name.json"
}
if wants_op mla; then
  op mla-decode mla-decode "${MLA[@]}" --check
  op mla-decode-bf16 mla-decode "${MLA[@]}" --weights-dtype bf16 --tensor-cores --check
fi
if wants_op experts; then
  for t in "${TOKENS[@]}"; do
    op "experts-$t" grouped-experts --tokens "$t" "${EXPERTS[@]}"
    op "experts-$t-bf16" grouped-experts --tokens "$t" "${EXPERTS[@]}" --weights-dtype bf16 --tensor-cores
  done
  op experts-checked grouped-experts "${CHECKED[@]}" --check
fi
if wants_op linear; then
  # Prefill-sized products: saturn's tiles (f32 SIMT, bf16 tensor cores) and the same through
  # --cublas, against cuBLAS through PyTorch below.
  op linear linear "${LINEAR[@]}" --check
  op linear-bf16 linear "${LINEAR[@]}" --weights-dtype bf16 --tensor-cores --check
  op linear-cublas linear "${LINEAR[@]}" --cublas --check
  op linear-bf16-cublas linear "${LINEAR[@]}" --weights-dtype bf16 --tensor-cores --cublas --check
fi
if wants_op matmul; then
  # The prefill attention's batched products: f32 tiles, and cuBLAS's strided batches.
  op matmul matmul "${MATMUL[@]}" --check
  op matmul-cublas matmul "${MATMUL[@]}" --cublas --check
  op matmul-bf16-cublas matmul "${MATMUL[@]}" --weights-dtype bf16 --tensor-cores --cublas --check
fi
fi

if wants torch; then
echo "== [${SECONDS}s] the same problems in PyTorch" | tee -a "$OUT/log.txt"
PY="${PYTHON:-python3}"
torch_op() {  # torch_op NAME ARGS...: exit 3 from the script means no (CUDA) PyTorch here
  local name="$1"; shift
  local rc=0
  "$PY" scripts/bench_ops_torch.py "$@" --device "$TORCH_DEVICE" --json > "$OUT/torch-$name.json" || rc=$?
  if [ "$rc" = 3 ]; then
    echo "no PyTorch with $TORCH_DEVICE for $PY: no PyTorch comparison" | tee -a "$OUT/log.txt"
    rm -f "$OUT/torch-$name.json"
    return 1
  elif [ "$rc" != 0 ]; then
    echo "bench_ops_torch.py $name failed (exit $rc)" | tee -a "$OUT/log.txt"
    return 0
  fi
  tee -a "$OUT/log.txt" < "$OUT/torch-$name.json"
}
torch_ops() {  # the chosen groups' problems, both dtypes; stops at the first "no PyTorch"
  if wants_op mla; then
    torch_op mla-decode mla-decode "${MLA[@]}" || return 0
    torch_op mla-decode-bf16 mla-decode "${MLA[@]}" --dtype bfloat16 || return 0
  fi
  if wants_op experts; then
    for t in "${TOKENS[@]}"; do
      torch_op "experts-$t" grouped-experts --tokens "$t" "${EXPERTS[@]}" || return 0
      torch_op "experts-$t-bf16" grouped-experts --tokens "$t" "${EXPERTS[@]}" --dtype bfloat16 || return 0
    done
  fi
  if wants_op linear; then
    # cuBLAS (through PyTorch) against saturn's tiles: the mma-or-cuBLAS decision.
    torch_op linear linear "${LINEAR[@]}" || return 0
    torch_op linear-bf16 linear "${LINEAR[@]}" --dtype bfloat16 || return 0
  fi
  if wants_op matmul; then
    torch_op matmul matmul "${MATMUL[@]}" || return 0
    torch_op matmul-bf16 matmul "${MATMUL[@]}" --dtype bfloat16 || return 0
  fi
}
torch_ops
fi
