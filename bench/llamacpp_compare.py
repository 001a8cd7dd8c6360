#!/usr/bin/env python3
"""Joins bench/llamacpp.sh's rounds: medians of llama-bench's tok/s per GGUF type and of
qs_decode_bench's per preset, and the ratio ours / llama.cpp for decode and prefill.

usage: llamacpp_compare.py OUT_DIR TYPE:PRESET [TYPE:PRESET ...]
"""
import glob
import json
import os
import statistics
import sys


def main(argv):
    out, pairs = argv[0], [p.split(":") for p in argv[1:]]
    ours_runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "ours-*.json")))]
    if not ours_runs:
        sys.exit("llamacpp_compare: no ours-*.json in " + out)
    first = ours_runs[0]
    print(f"\n## ours vs llama.cpp, {first['model']}\n")
    print(f"threads {first['threads']}, prompt {first['prompt_tokens']}, decode "
          f"{first['decode_tokens']} tokens, batch 1; medians over {len(ours_runs)} interleaved "
          "rounds (min-max in brackets).\n")
    print("| llama.cpp | ours | llama.cpp decode tok/s | ours decode tok/s | **ours / llama.cpp** "
          "| llama.cpp prefill tok/s | ours prefill tok/s | **ours / llama.cpp** |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")

    def spread(v):
        return f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"

    for typ, preset in pairs:
        lower = typ.lower()
        dec_l, pre_l = [], []
        for f in sorted(glob.glob(os.path.join(out, f"llamacpp-{lower}-*.json"))):
            for row in json.load(open(f)):
                (pre_l if row["n_prompt"] > 0 and row["n_gen"] == 0 else dec_l).append(row["avg_ts"])
        dec_o, pre_o = [], []
        for run in ours_runs:
            for r in run["results"]:
                if r["preset"] == preset and "error" not in r:
                    dec_o.append(r["decode_tokens_per_s"])
                    pre_o.append(r["prefill_tokens_per_s"])
        if not (dec_l and pre_l and dec_o and pre_o):
            print(f"| {typ} | {preset} | missing | | | | | |")
            continue
        rd = statistics.median(dec_o) / statistics.median(dec_l)
        rp = statistics.median(pre_o) / statistics.median(pre_l)
        print(f"| {typ} | {preset} | {spread(dec_l)} | {spread(dec_o)} | **{rd:.2f}×** | "
              f"{spread(pre_l)} | {spread(pre_o)} | **{rp:.2f}×** |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
