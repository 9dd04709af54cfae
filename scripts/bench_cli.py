#!/usr/bin/env python3
"""Times saturn CLI commands: median, min and max wall time over N runs of the whole process,
and the peak RSS of one run (from /usr/bin/time). Used for the CLI figures in BENCHMARKS.md.

    cargo build --release
    python3 scripts/bench_cli.py [N]
"""
import statistics
import subprocess
import sys
import time

SATURN = "./target/release/saturn"
COMMANDS = [
    ["dump", "tests/fixtures/configs/hf-deepseek-v3-671b.config.json"],
    ["eval", "models/deepseek-v3-tiny", "--ids", "3,17,42,5,9,11,2,7,8,1,0,4", "--out", "/tmp/saturn-bench.safetensors"],
    ["eval", "models/deepseek-v2-lite-tiny", "--ids", "3,17,42,5,9,11,2,7,8,1", "--out", "/tmp/saturn-bench.safetensors"],
    ["compile", "models/deepseek-v3-671b.toml", "--target", "h100", "--phase", "decode", "-o", "/tmp/saturn-bench-decode"],
    ["compile", "models/deepseek-v3-671b.toml", "--target", "h100", "--phase", "prefill", "-o", "/tmp/saturn-bench-prefill"],
    ["explain", "models/deepseek-v3-671b.toml", "--target", "h100", "--phase", "decode"],
]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    for args in COMMANDS:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([SATURN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - start)
        rss = subprocess.run(
            ["/usr/bin/time", "-f", "%M", SATURN, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True,
        ).stderr.strip().splitlines()[-1]
        ms = [t * 1000 for t in times]
        print(f"saturn {' '.join(args)}")
        print(f"  median {statistics.median(ms):.1f} ms, min {min(ms):.1f} ms, max {max(ms):.1f} ms, "
              f"peak RSS {int(rss) / 1024:.1f} MiB ({runs} runs)")


if __name__ == "__main__":
    main()
