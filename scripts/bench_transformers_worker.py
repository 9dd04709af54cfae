"""The Hugging Face transformers half of scripts/bench_transformers.py.

Runs inside the benchmark virtualenv (.venv-bench/, which has torch and transformers); the
main script starts it with that venv's python and reads one JSON object from its stdout.
Progress goes to stderr. Not meant to be run by hand, but it can be:

    .venv-bench/bin/python scripts/bench_transformers_worker.py create-mid target/bench-models/deepseek-v3-mid
    .venv-bench/bin/python scripts/bench_transformers_worker.py bench models/deepseek-v3-tiny \
        --ids 1,8,15,22 --decode-tokens 8 --threads 2 --runs 5 --decode-runs 3

`--device cuda` runs the model on GPU 0 (scripts/gpu-check.sh does, against saturn's CUDA
backend), with `--dtype bfloat16` in bf16; timed regions end with a device synchronisation.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

# The mid-size random DeepSeek-V3-style model (about 816M parameters, 3.3 GB in float32).
# rope_parameters is spelt as transformers 5.x writes it (see models/deepseek-v3-tiny/config.json).
MID_CONFIG = dict(
    vocab_size=32000,
    hidden_size=1024,
    intermediate_size=2816,
    moe_intermediate_size=512,
    num_hidden_layers=8,
    num_attention_heads=16,
    num_key_value_heads=16,
    n_shared_experts=1,
    n_routed_experts=64,
    num_experts_per_tok=6,
    n_group=8,
    topk_group=4,
    first_k_dense_replace=1,
    norm_topk_prob=True,
    routed_scaling_factor=2.5,
    q_lora_rank=512,
    kv_lora_rank=256,
    qk_nope_head_dim=64,
    qk_rope_head_dim=32,
    v_head_dim=64,
    hidden_act="silu",
    max_position_embeddings=16384,
    rope_parameters={
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 4096,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    rope_interleave=True,
    rms_norm_eps=1e-6,
    initializer_range=0.02,
    tie_word_embeddings=False,
    attention_bias=False,
    num_nextn_predict_layers=0,
    bos_token_id=0,
    eos_token_id=1,
)


def log(msg: str) -> None:
    print(f"[worker] {msg}", file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def create_mid(out_dir: str) -> dict:
    """Build the mid model with explicit N(0, 0.02) weights and save it; reuse it if present."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    if os.path.exists(os.path.join(out_dir, "config.json")):
        log(f"{out_dir} exists; reusing it")
        return {"path": out_dir, "created": False}
    start = time.perf_counter()
    config = DeepseekV3Config(**MID_CONFIG)
    config.dtype = torch.float32
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(config).to(torch.float32).eval()
    # Set every weight explicitly, whatever transformers' own init did: Linear/Embedding weights
    # and the experts' packed 3-D weights N(0, 0.02), router weights N(0, 0.02), RMSNorm
    # weights 1, e_score_correction_bias 0.
    torch.manual_seed(0)
    with torch.no_grad():
        for name, module in model.named_modules():
            kind = type(module).__name__
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, 0.02)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif kind.endswith("RMSNorm"):
                module.weight.fill_(1.0)
            elif kind.endswith("TopkRouter"):
                module.weight.normal_(0.0, 0.02)
                module.e_score_correction_bias.zero_()
            elif kind.endswith("Experts"):
                module.gate_up_proj.normal_(0.0, 0.02)
                module.down_proj.normal_(0.0, 0.02)
    params = sum(p.numel() for p in model.parameters())
    log(f"built {params / 1e6:.1f}M parameters in {time.perf_counter() - start:.1f} s; saving")
    # Write next to the target, then rename, so an interrupted run leaves no half-written model.
    tmp_dir = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    # transformers 5.x always writes safetensors (safe_serialization is gone); one shard.
    model.save_pretrained(tmp_dir, max_shard_size="50GB")
    os.rename(tmp_dir, out_dir)
    seconds = time.perf_counter() - start
    log(f"saved {out_dir} in {seconds:.1f} s")
    return {"path": out_dir, "created": True, "parameters": params, "seconds": seconds,
            "peak_rss_mib": peak_rss_mib()}


def bench(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    ids = [int(x) for x in args.ids.split(",")]
    m = args.decode_tokens

    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    start = time.perf_counter()
    # `dtype` is transformers 5.x's name for `torch_dtype` (deprecated, warns).
    kwargs = dict(dtype=getattr(torch, args.dtype), attn_implementation="eager")
    if args.experts_implementation:
        kwargs["experts_implementation"] = args.experts_implementation
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs).to(device).eval()
    sync()
    load_s = time.perf_counter() - start
    rss_after_load = peak_rss_mib()
    log(f"loaded {args.model} in {load_s:.2f} s (peak RSS {rss_after_load:.0f} MiB)")

    prompt = torch.tensor([ids], dtype=torch.long, device=device)

    def prefill():
        # The last position's logits only, as `generate` asks for them (and saturn's generation
        # graphs compute): the vocabulary projection of every prompt position is not prefill's.
        return model(input_ids=prompt, use_cache=True, logits_to_keep=1)

    def greedy():
        out = prefill()
        cache = out.past_key_values
        logits = out.logits[0, -1]
        generated, margins, times = [], [], []
        for step in range(m + 1):
            top2 = torch.topk(logits, 2)
            token = int(top2.indices[0])
            generated.append(token)
            margins.append(float(top2.values[0] - top2.values[1]))
            if step == m:
                break
            t0 = time.perf_counter()
            out = model(input_ids=torch.tensor([[token]], dtype=torch.long, device=device),
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[0, -1]
            sync()
            # argmax of the next step is cheap; it is counted in the next step's time.
            times.append(time.perf_counter() - t0)
        return generated, margins, times

    with torch.inference_mode():
        # Prefill: one warm-up, then the median of several runs (a fresh cache each time).
        prefill()
        prefill_times = []
        for _ in range(args.runs):
            sync()
            t0 = time.perf_counter()
            prefill()
            sync()
            prefill_times.append(time.perf_counter() - t0)
        log(f"prefill median {statistics.median(prefill_times) * 1000:.1f} ms")
        # Decode: one warm-up run (prefill + M steps), then several timed runs; each run's decode
        # time is the sum of its M step times (the prefill is not counted).
        warm_ids, _, _ = greedy()
        runs = [greedy() for _ in range(args.decode_runs)]
    ids_out, margins, _ = runs[0]
    totals = [sum(r[2]) for r in runs]
    total = statistics.median(totals)
    step_times = [t for r in runs for t in r[2]]
    log(f"decode {m} steps: median {total:.3f} s over {len(runs)} runs")
    prefill_median = statistics.median(prefill_times)
    return {
        "prompt_tokens": len(ids),
        "decode_tokens": m,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "dtype": args.dtype,
        "load_seconds": load_s,
        "peak_rss_mib_after_load": rss_after_load,
        "peak_rss_mib": peak_rss_mib(),
        "attn_implementation": model.config._attn_implementation,
        "experts_implementation": getattr(model.config, "_experts_implementation", None),
        "prefill_seconds": prefill_times,
        "prefill_seconds_median": prefill_median,
        "prefill_tokens_per_s": len(ids) / prefill_median,
        "decode_runs": len(runs),
        "decode_seconds_per_run": totals,
        "decode_seconds_median": total,
        "decode_step_seconds": [r[2] for r in runs],
        "decode_tokens_per_s": m / total if total > 0 else None,
        "decode_tokens_per_s_median_step": 1 / statistics.median(step_times) if step_times else None,
        # Greedy ids: the first from the prefill's last logits, then one per decode step (M + 1).
        "greedy_ids": ids_out,
        "greedy_top2_margins": margins,
        "greedy_deterministic": all(r[0] == warm_ids for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create-mid", help="create the mid-size random DeepSeek-V3-style model")
    p.add_argument("out_dir")
    p = sub.add_parser("bench", help="time prefill and greedy decode of one model")
    p.add_argument("model")
    p.add_argument("--ids", required=True)
    p.add_argument("--decode-tokens", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", type=int, default=5, help="timed prefill runs (median)")
    p.add_argument("--decode-runs", type=int, default=3, help="timed decode runs of M steps (median)")
    p.add_argument("--experts-implementation", default=None)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (GPU 0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p = sub.add_parser("versions", help="print the versions of torch and transformers")
    args = parser.parse_args()

    if args.command == "create-mid":
        result = create_mid(args.out_dir)
    elif args.command == "bench":
        result = bench(args)
    else:
        result = {}
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                          "python": sys.version.split()[0]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
