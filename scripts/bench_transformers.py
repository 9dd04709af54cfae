#!/usr/bin/env python3
"""Compare saturn with Hugging Face transformers on CPU: prefill and decode tokens/s, same machine,
same weights, one run of the script.

    python3 scripts/bench_transformers.py                      # all three models
    python3 scripts/bench_transformers.py --models tiny-v3,tiny-v2 --skip-saturn
    python3 scripts/bench_transformers.py --models mid --prompt-tokens 256 --decode-tokens 16

Cost: the first run creates a virtualenv at .venv-bench/ (gitignored) and pip-installs torch,
transformers and safetensors into it (pinned below; about 80-100 s and 5.6 GB, PyPI must be
reachable), and creates the mid-size random model at target/bench-models/deepseek-v3-mid/
(about 35 s, 3.3 GB on disk, 6 GB of RAM while it is written). Both are reused afterwards. Not
run in CI.

Models (--models, comma-separated; default all):
    tiny-v3  models/deepseek-v3-tiny              prompt 32 tokens, decode 64 tokens
    tiny-v2  models/deepseek-v2-lite-tiny         prompt 32 tokens, decode 64 tokens
    mid      target/bench-models/deepseek-v3-mid  prompt 128 tokens, decode 32 tokens
             (random DeepSeek-V3-style, 816M parameters: hidden 1024, 8 layers, 64 routed
             experts + 1 shared, top-6, YaRN RoPE; see scripts/bench_transformers_worker.py)

Prompt ids: ids[i] = (1 + 7919 * i) % vocab_size, the same for both sides.

transformers (run in the venv by scripts/bench_transformers_worker.py): float32, eager
attention (experts: transformers' default implementation, recorded in the results),
torch.set_num_threads(<cores>), torch.inference_mode(). Prefill: one forward over the prompt with
use_cache=True and logits_to_keep=1 (the last position's logits, as generate() asks; saturn's
generation graphs compute the same), one warm-up then the median of --runs runs. Decode: prefill, then M greedy steps
feeding one token with past_key_values; one warm-up run, then decode tokens/s = M / the median
over --decode-runs runs of the summed step times.

saturn: `cargo build --release`, then `target/release/saturn bench MODEL --ids ... --decode-tokens M
--json` (if this build has no bench command, that is said and the transformers side still runs),
and `saturn generate MODEL --ids ... --max-new-tokens M --ignore-eos` to check that both sides
produce the same greedy ids (first id from the prefill, then M - 1 decode steps); the
generated_ids in saturn bench's JSON, where present, are checked too.

Rounds (--rounds, default 5): each model is timed in rounds, transformers then saturn in each, and
the table gives each side's median and the median of the rounds' ratios, with every round's ratio
beside it. This machine's speed drifts over minutes (read bandwidth 27-67 GB/s, and the clock),
so a ratio from one round can compare a fast phase of one side with a slow phase of the other; the
median of paired rounds is steadier (with 3 rounds one binary's mid-size prefill ratio came out
2.73x, 3.21x and 3.10x in three runs; BENCHMARKS.md). The greedy-id check runs once.

Output: a markdown table per model on stdout; all results as JSON at --out
(default target/bench-results.json). The main script uses the standard library only.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "scripts" / "bench_transformers_worker.py"
SATURN = ROOT / "target" / "release" / "saturn"

# The versions this benchmark was set up with (plain PyPI wheels; there is no CPU-only torch here).
PINNED = {"torch": "2.15.0", "transformers": "5.23.0", "safetensors": "0.8.0"}

MODELS = {
    "tiny-v3": {"path": "models/deepseek-v3-tiny", "prompt_tokens": 32, "decode_tokens": 64},
    "tiny-v2": {"path": "models/deepseek-v2-lite-tiny", "prompt_tokens": 32, "decode_tokens": 64},
    "mid": {"path": "target/bench-models/deepseek-v3-mid", "prompt_tokens": 128, "decode_tokens": 32,
            "created": True},
}

SATURN_FIELDS = ["prefill_tokens_per_s", "decode_tokens_per_s", "decode_bytes_per_token",
                 "copy_bandwidth_bytes_per_s", "bandwidth_limit_tokens_per_s", "bandwidth_fraction",
                 "threads", "backend"]


class BenchError(Exception):
    """A failure the user can act on; printed without a traceback."""


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_capture(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# Machine


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    git = run_capture(["git", "rev-parse", "HEAD"])
    if git.returncode == 0:
        dirty = run_capture(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
        info["git_commit"] = git.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    return info


# ---------------------------------------------------------------------------------------------
# transformers side


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_versions(py: Path) -> dict | None:
    if not py.exists():
        return None
    probe = run_capture([py, "-c", "import json, torch, transformers, safetensors; print(json.dumps("
                         "{'torch': torch.__version__.split('+')[0], 'transformers': transformers.__version__,"
                         " 'safetensors': safetensors.__version__}))"])
    if probe.returncode != 0:
        return None
    return json.loads(probe.stdout.strip().splitlines()[-1])


def ensure_venv(venv: Path) -> Path:
    """Create the venv and install the pinned packages unless they are already there."""
    py = venv_python(venv)
    found = installed_versions(py)
    if found == PINNED:
        log(f"reusing {venv} (torch {found['torch']}, transformers {found['transformers']})")
        return py
    if not py.exists():
        log(f"creating a virtualenv at {venv}")
        made = run_capture([sys.executable, "-m", "venv", venv])
        if made.returncode != 0:
            raise BenchError(f"`{sys.executable} -m venv {venv}` failed (exit {made.returncode}):\n"
                             f"{tail(made.stderr or made.stdout)}\n"
                             "Is the venv module installed (python3-venv on Debian/Ubuntu)?")
    elif found:
        log(f"{venv} has {found}, want {PINNED}; reinstalling the pinned versions")
    packages = [f"{name}=={version}" for name, version in PINNED.items()]
    log(f"pip install {' '.join(packages)} (about 80-100 s and 5.6 GB the first time)")
    start = time.perf_counter()
    # pip's output goes straight to the terminal (stderr), so progress and errors are visible.
    pip = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", *packages],
                         cwd=ROOT, stdout=sys.stderr)
    if pip.returncode != 0:
        raise BenchError(f"pip install into {venv} failed (exit {pip.returncode}); see pip's output above. "
                         "PyPI must be reachable; remove the venv folder to start over.")
    found = installed_versions(py)
    if found != PINNED:
        raise BenchError(f"after pip install, {venv} has {found}, expected {PINNED}")
    log(f"installed in {time.perf_counter() - start:.0f} s")
    return py


def run_worker(py: Path, args: list) -> dict:
    """Run the worker in the venv; its stderr streams through, its stdout is one JSON object."""
    cmd = [str(py), str(WORKER), *[str(a) for a in args]]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise BenchError(f"the transformers worker failed (exit {proc.returncode}): {' '.join(cmd)}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as e:
        raise BenchError(f"the transformers worker printed no JSON ({e}): {proc.stdout[-500:]!r}") from e


def has_weights(folder: Path) -> bool:
    return (folder / "config.json").exists() and (
        (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists())


def ensure_mid(py: Path | None, venv: Path, folder: Path) -> None:
    if has_weights(folder):
        log(f"reusing {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}")
        return
    if py is None:
        py = ensure_venv(venv)
    log(f"creating the mid model at {folder} (about 35 s, 3.3 GB)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    run_worker(py, ["create-mid", folder])
    if not has_weights(folder):
        raise BenchError(f"creating the mid model did not leave config.json + model.safetensors in {folder}")


# ---------------------------------------------------------------------------------------------
# saturn side


def build_saturn() -> None:
    log("cargo build --release")
    build = subprocess.run(["cargo", "build", "--release"], cwd=ROOT, stdout=sys.stderr)
    if build.returncode != 0:
        raise BenchError(f"`cargo build --release` failed (exit {build.returncode}); "
                         "fix the build or pass --skip-saturn")


def saturn_has_bench() -> bool:
    probe = run_capture([SATURN, "bench", "--help"])
    return probe.returncode == 0


def parse_json_object(text: str) -> dict | None:
    """The JSON object in saturn's stdout: the whole of it, or its last line that parses."""
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except json.JSONDecodeError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def show(cmd: list) -> str:
    """A command for the log: paths relative to the repo, long id lists abbreviated."""
    words = []
    for word in map(str, cmd):
        if word.count(",") > 8:
            word = f"<{word.count(',') + 1} ids>"
        words.append(word.replace(str(ROOT) + "/", ""))
    return " ".join(words)


def run_saturn(cmd: list):
    """Runs a saturn command: (process, wall seconds, an error result if it failed)."""
    log(show(cmd))
    start = time.perf_counter()
    proc = run_capture(cmd)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return proc, wall, {"error": f"exit {proc.returncode}: {tail(proc.stderr, 10)}", "wall_seconds": wall}
    return proc, wall, None


def saturn_bench(model: Path, ids: list, decode_tokens: int) -> dict:
    cmd = [SATURN, "bench", model, "--ids", ",".join(map(str, ids)), "--decode-tokens", decode_tokens, "--json"]
    proc, wall, failed = run_saturn(cmd)
    if failed:
        return failed
    result = parse_json_object(proc.stdout)
    if result is None:
        return {"error": f"no JSON object on stdout: {proc.stdout[-500:]!r}", "wall_seconds": wall}
    missing = [f for f in SATURN_FIELDS if f not in result]
    if missing:
        result["warning"] = f"fields missing from saturn bench --json: {', '.join(missing)}"
    result["wall_seconds"] = wall
    return result


def saturn_generate(model: Path, ids: list, max_new_tokens: int) -> dict:
    cmd = [SATURN, "generate", model, "--ids", ",".join(map(str, ids)), "--max-new-tokens", max_new_tokens,
           "--ignore-eos"]
    proc, wall, failed = run_saturn(cmd)
    if failed:
        return failed
    try:
        out = [int(x) for x in proc.stdout.strip().splitlines()[0].split(",")]
    except (IndexError, ValueError):
        return {"error": f"could not read ids from stdout: {proc.stdout[-300:]!r}", "wall_seconds": wall}
    rate = [line for line in proc.stderr.splitlines() if line.startswith("generated ")]
    return {"ids": out, "wall_seconds": wall, "report": rate[-1] if rate else None}


# ---------------------------------------------------------------------------------------------
# Report


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def compare_ids(tf: dict | None, gen: dict | None, decode_tokens: int) -> dict:
    if not tf or "greedy_ids" not in tf:
        return {"status": "not checked (no transformers run)"}
    if not gen:
        return {"status": "not checked (no saturn run)"}
    if "error" in gen:
        return {"status": "not checked (saturn generate failed)", "error": gen["error"]}
    ours, theirs = gen["ids"], tf["greedy_ids"][:decode_tokens]
    if ours == theirs:
        return {"status": "match", "tokens": len(ours)}
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    margin = tf["greedy_top2_margins"][first] if first < len(tf["greedy_top2_margins"]) else None
    return {"status": "differ", "first_difference": first, "saturn": ours, "transformers": theirs,
            "transformers_top2_margin_there": margin}


RATES = [("prefill_tokens_per_s", "prefill tokens/s"), ("decode_tokens_per_s", "decode tokens/s")]


def median(values: list):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def is_number(value) -> bool:
    return isinstance(value, (int, float))


def summarize_rounds(tf_rounds: list, sb_rounds: list) -> dict:
    """Per rate: each side's value in every round, their medians, each round's ratio (saturn /
    transformers, where both sides ran) and the median ratio."""
    summary = {}
    for key, _ in RATES:
        tf = [r.get(key) for r in tf_rounds]
        sb = [r.get(key) for r in sb_rounds]
        ratios = [a / b for a, b in zip(sb, tf) if is_number(a) and is_number(b) and b]
        summary[key] = {"transformers": tf, "saturn": sb,
                        "transformers_median": median([v for v in tf if is_number(v)]),
                        "saturn_median": median([v for v in sb if is_number(v)]),
                        "ratios": ratios, "ratio_median": median(ratios)}
    return summary


def print_table(name: str, entry: dict) -> None:
    tf = entry.get("transformers") or {}
    sb = entry.get("saturn_bench") or {}
    rounds = entry["rounds"]
    print(f"\n### {name}: `{entry['path']}`, prompt {entry['prompt_tokens']} tokens, "
          f"decode {entry['decode_tokens']} tokens\n")
    count = max(len(entry.get("transformers_rounds", [])), len(entry.get("saturn_bench_rounds", [])))
    print(f"Medians over {count} round(s); the ratio is the median of the rounds' ratios.\n")
    print("| | transformers | saturn | saturn / transformers | each round's ratio |")
    print("|---|---:|---:|---:|---|")
    for key, label in RATES:
        r = rounds[key]
        each = ", ".join(f"{x:.2f}×" for x in r["ratios"]) or "–"
        middle = f"{r['ratio_median']:.2f}×" if r["ratio_median"] is not None else "–"
        print(f"| {label} | {fmt(r['transformers_median'])} | {fmt(r['saturn_median'])} | {middle} | {each} |")
    print()
    print("- saturn and transformers below: the first round")
    if entry.get("saturn_bench") is None:
        print(f"- saturn bench: {entry['saturn_status'].split(':')[0]}")
    elif "error" in sb:
        print(f"- saturn bench failed: {sb['error']}")
    else:
        bw = sb.get("copy_bandwidth_bytes_per_s")
        bpt = sb.get("decode_bytes_per_token")
        frac = sb.get("bandwidth_fraction")
        print(f"- saturn: decode bytes/token {fmt(bpt / 1e6 if bpt else None, 2)} MB, copy bandwidth "
              f"{fmt(bw / 1e9 if bw else None, 2)} GB/s, bandwidth limit "
              f"{fmt(sb.get('bandwidth_limit_tokens_per_s'))} tokens/s, bandwidth fraction "
              f"{fmt(frac * 100 if isinstance(frac, (int, float)) else None)} %, threads {fmt(sb.get('threads'))}, "
              f"backend {fmt(sb.get('backend'))}")
        if "read_bandwidth_bytes_per_s" in sb:
            rb = sb.get("read_bandwidth_bytes_per_s")
            rf = sb.get("read_fraction")
            print(f"- saturn: read bandwidth {fmt(rb / 1e9 if rb else None, 2)} GB/s, read limit "
                  f"{fmt(sb.get('read_limit_tokens_per_s'))} tokens/s, read fraction "
                  f"{fmt(rf * 100 if isinstance(rf, (int, float)) else None)} %")
        if "warning" in sb:
            print(f"- saturn: {sb['warning']}")
    if tf:
        print(f"- transformers: load {tf['load_seconds']:.1f} s, peak RSS {tf['peak_rss_mib']:.0f} MiB, "
              f"threads {tf['threads']}, attention {tf['attn_implementation']}, experts "
              f"{tf['experts_implementation']}, decode {tf['decode_tokens_per_s_median_step']:.1f} tokens/s "
              f"by the median step, prefill median {tf['prefill_seconds_median'] * 1000:.1f} ms")
    elif entry.get("transformers_status"):
        print(f"- transformers: {entry['transformers_status']}")
    check = entry["greedy_ids"]
    line = f"- greedy ids ({entry['decode_tokens']} tokens, saturn generate vs transformers): {check['status']}"
    if check["status"] == "differ":
        margin = check.get("transformers_top2_margin_there")
        line += (f" from position {check['first_difference']} (transformers' top-2 logit margin there: "
                 f"{fmt(margin, 4)})")
    print(line)
    if "greedy_ids_bench" in entry:
        check = entry["greedy_ids_bench"]
        line = f"- greedy ids (saturn bench's generated_ids vs transformers): {check['status']}"
        if check["status"] == "differ":
            line += f" from position {check['first_difference']}"
        print(line)
    if entry["load_average_before"] > entry.get("threads", 1) / 2:
        print(f"- note: the 1-minute load average was {entry['load_average_before']:.1f} before this model "
              "ran; other processes were using the CPU")


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, from {', '.join(MODELS)} (default: all)")
    parser.add_argument("--prompt-tokens", type=int, help="prompt length for every model (default: per model)")
    parser.add_argument("--decode-tokens", type=int, help="decode steps for every model (default: per model)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds per model, each timing transformers then saturn; the tables give the "
                             "median of each side and the median of the rounds' ratios (default 5)")
    parser.add_argument("--runs", type=int, default=5, help="timed transformers prefill runs (median; default 5)")
    parser.add_argument("--decode-runs", type=int, default=3,
                        help="timed transformers decode runs (median; default 3)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the usable cores)")
    parser.add_argument("--experts-implementation", choices=["eager", "grouped_mm", "batched_mm"],
                        help="transformers' MoE experts kernel (default: transformers' own default, "
                             "grouped_mm in 5.23)")
    parser.add_argument("--skip-saturn", action="store_true", help="no cargo build, no saturn runs")
    parser.add_argument("--skip-transformers", action="store_true", help="no transformers runs")
    parser.add_argument("--no-id-check", action="store_true", help="do not run saturn generate for the ids check")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-bench",
                        help="the virtualenv for torch + transformers (default: .venv-bench/ in the repo)")
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "bench-results.json",
                        help="where to write all results as JSON (default: target/bench-results.json)")
    args = parser.parse_args()

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        parser.error(f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODELS)}")
    for flag in ("prompt_tokens", "decode_tokens", "rounds", "runs", "decode_runs", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    venv = args.venv.resolve()
    plan = {}
    for name in names:
        spec = MODELS[name]
        prompt_tokens = args.prompt_tokens or spec["prompt_tokens"]
        decode_tokens = args.decode_tokens or spec["decode_tokens"]
        config = ROOT / spec["path"] / "config.json"
        # The mid model may not exist yet; its limit is the one create-mid writes.
        max_positions = (json.loads(config.read_text()).get("max_position_embeddings") if config.exists()
                         else 16384)
        if max_positions and prompt_tokens + decode_tokens > max_positions:
            parser.error(f"{name}: prompt {prompt_tokens} + decode {decode_tokens} tokens exceed the model's "
                         f"max_position_embeddings {max_positions}")
        plan[name] = (prompt_tokens, decode_tokens)

    machine = machine_info()
    threads = args.threads or machine["usable_cpus"]
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print("## saturn vs transformers (CPU, float32)\n")
    print(f"- command: `{command}`")
    print(f"- machine: {machine['cpu']}, {machine['usable_cpus']} usable cores "
          f"({machine['logical_cpus']} logical), {machine['mem_total_gib']} GiB RAM, {machine['platform']}")
    if "git_commit" in machine:
        print(f"- saturn commit: {machine['git_commit']}")
    sys.stdout.flush()

    results = {"command": command, "argv": sys.argv, "machine": machine, "threads": threads,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": {}}

    # Setup: the venv (for transformers, or to create the mid model), the mid model, saturn.
    py = None
    if not args.skip_transformers:
        py = ensure_venv(venv)
    if "mid" in names:
        ensure_mid(py, venv, ROOT / MODELS["mid"]["path"])
        if py is None and not args.skip_transformers:
            py = venv_python(venv)
    versions = None
    if py is not None:
        versions = run_worker(py, ["versions"])["versions"]
        print(f"- torch {versions['torch']}, transformers {versions['transformers']} "
              f"(venv {venv}, Python {versions['python']}), torch threads {threads}")
    results["versions"] = versions

    bench_available = False
    saturn_status = "skipped (--skip-saturn)"
    if not args.skip_saturn:
        build_saturn()
        bench_available = saturn_has_bench()
        if bench_available:
            saturn_status = "ok"
        else:
            saturn_status = ("not available: this build of saturn has no `bench` command "
                             "(`saturn bench --help` fails); transformers numbers only")
            log(saturn_status)
    results["saturn_status"] = saturn_status
    print(f"- saturn bench: {saturn_status}")

    for name in names:
        spec = MODELS[name]
        load = os.getloadavg()[0]
        if load > threads / 2:
            log(f"warning: load average {load:.1f} on {machine['usable_cpus']} cores before {name}: "
                "other processes may be running and the timings may be noisy")
        folder = ROOT / spec["path"]
        if not has_weights(folder):
            raise BenchError(f"{folder} has no config.json + model.safetensors")
        vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
        prompt_tokens, decode_tokens = plan[name]
        ids = [(1 + 7919 * i) % vocab for i in range(prompt_tokens)]
        entry = {"path": spec["path"], "prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens,
                 "load_average_before": load, "threads": threads,
                 "ids": ids, "transformers": None, "saturn_bench": None, "saturn_generate": None,
                 "saturn_status": saturn_status}
        log(f"{name}: prompt {prompt_tokens} tokens, decode {decode_tokens} tokens")

        # Rounds, each transformers then saturn minutes apart at most, so that a ratio compares
        # the two in the same state of a machine whose speed drifts.
        tf_rounds, sb_rounds = [], []
        for round_index in range(args.rounds):
            if args.rounds > 1:
                log(f"{name}: round {round_index + 1} of {args.rounds}")
            if py is not None:
                tf_rounds.append(run_worker(py, [
                    "bench", folder, "--ids", ",".join(map(str, ids)), "--decode-tokens", decode_tokens,
                    "--threads", threads, "--runs", args.runs, "--decode-runs", args.decode_runs,
                    *(["--experts-implementation", args.experts_implementation]
                      if args.experts_implementation else [])]))
            if not args.skip_saturn and bench_available:
                sb_rounds.append(saturn_bench(folder, ids, decode_tokens))
        if py is not None:
            entry["transformers"] = tf_rounds[0]
            entry["transformers_rounds"] = tf_rounds
        else:
            entry["transformers_status"] = "skipped (--skip-transformers)"
        if sb_rounds:
            entry["saturn_bench"] = sb_rounds[0]
            entry["saturn_bench_rounds"] = sb_rounds
        entry["rounds"] = summarize_rounds(tf_rounds, sb_rounds)
        if not args.skip_saturn:
            if not args.no_id_check and entry["transformers"] is not None:
                entry["saturn_generate"] = saturn_generate(folder, ids, decode_tokens)
        entry["greedy_ids"] = compare_ids(entry["transformers"], entry["saturn_generate"], decode_tokens)
        bench_ids = (entry["saturn_bench"] or {}).get("generated_ids")
        if isinstance(bench_ids, list) and entry["transformers"] is not None:
            entry["greedy_ids_bench"] = compare_ids(entry["transformers"], {"ids": bench_ids}, len(bench_ids))
        results["models"][name] = entry
        print_table(name, entry)
        sys.stdout.flush()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nFull results: {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
