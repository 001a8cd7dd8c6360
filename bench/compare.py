"""Joins qs_decode_bench's and transformers_bench.py's JSON (one run, same machine, same
threads) into the ratio table bench/decode.sh prints, and checks the issue's targets.

    python3 bench/compare.py --ours ours.json --transformers tf.json [--presets bench/presets.json]

Columns: our decode/prefill tok/s; ours / transformers on the same preset; ours vs our bf16
and fp32; the decode's weight bytes x tok/s as a % of the read bandwidth measured in the run.
Targets (indicative on a shared machine): int8 presets >= 1.8x and 4-bit presets >= 3.0x our
bf16 decode; >= 80% of read bandwidth; >= 3x transformers on the same preset.
Uses only the standard library.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_VS_BF16 = {8: 2.0, 4: 3.5}  # issue 11
TARGET_BANDWIDTH = 0.75  # issue 11, for int8 and 4-bit
TARGET_VS_TRANSFORMERS = 3.0


def ratio(a, b):
    return a / b if a and b else None


def fmt(x, suffix="x", digits=2):
    return "-" if x is None else f"{x:.{digits}f}{suffix}"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", required=True)
    ap.add_argument("--transformers", default="", help="omit to compare against ours only")
    ap.add_argument("--presets", default=os.path.join(HERE, "presets.json"))
    args = ap.parse_args(argv)
    with open(args.ours) as f:
        ours = json.load(f)
    theirs = {}
    if args.transformers:
        with open(args.transformers) as f:
            tf = json.load(f)
        theirs = {r["preset"]: r for r in tf["results"]}
        if tf["threads"] != ours["threads"] or tf["prompt_tokens"] != ours["prompt_tokens"] or \
                tf["decode_tokens"] != ours["decode_tokens"]:
            sys.exit("compare: the two runs used different threads/prompt/decode settings")
    with open(args.presets) as f:
        bits = {p["name"]: p.get("weight_bits") for p in json.load(f)["presets"]}

    rows = {r["preset"]: r for r in ours["results"]}
    bf16 = rows.get("bf16", {}).get("decode_tokens_per_s")
    fp32 = rows.get("fp32", {}).get("decode_tokens_per_s")
    bw = ours["read_bandwidth"]["used_gb_per_s"]
    print(f"\n## decode benchmark: ours vs transformers, {ours['model']}\n")
    print(f"threads {ours['threads']}, prompt {ours['prompt_tokens']}, decode "
          f"{ours['decode_tokens']} tokens, batch 1, greedy; read bandwidth {bw:.2f} GB/s "
          "(STREAM-like, same run). Ratios are side by side in one run; indicative only on a "
          "shared machine.\n")
    print("| preset | decode tok/s | vs bf16 | vs fp32 | % read BW | transformers decode | "
          "ours/transformers decode | prefill tok/s | transformers prefill | "
          "ours/transformers prefill |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    checks, notes = [], []
    for name, r in rows.items():
        t = theirs.get(name)
        t_text = "not run" if t is None else ("n/a" if "na" in t else None)
        if t is not None and "na" in t:
            notes.append(f"- {name}: transformers n/a: {t['na']}")
        if "error" in r:
            print(f"| {name} | error: {r['error']} | | | | {t_text or ''} | | | | |")
            checks.append((name, "runs in quantserve", False))
            continue
        dec, pre = r["decode_tokens_per_s"], r["prefill_tokens_per_s"]
        frac = r["read_bandwidth_fraction"]
        t_dec = None if t_text else t["decode_tokens_per_s"]
        t_pre = None if t_text else t["prefill_tokens_per_s"]
        vs_tf = ratio(dec, t_dec)
        print(f"| {name} | {dec:.2f} | {fmt(ratio(dec, bf16))} | {fmt(ratio(dec, fp32))} | "
              f"{100 * frac:.1f}% | {t_text or f'{t_dec:.2f}'} | {fmt(vs_tf)} | {pre:.1f} | "
              f"{t_text or f'{t_pre:.1f}'} | {fmt(ratio(pre, t_pre))} |")
        b = bits.get(name)
        if b in TARGET_VS_BF16 and bf16:
            checks.append((name, f"decode >= {TARGET_VS_BF16[b]}x bf16 "
                                 f"(is {ratio(dec, bf16):.2f}x)", ratio(dec, bf16) >= TARGET_VS_BF16[b]))
        checks.append((name, f">= {TARGET_BANDWIDTH:.0%} of read bandwidth (is {frac:.0%})",
                       frac >= TARGET_BANDWIDTH))
        if vs_tf is not None:
            checks.append((name, f">= {TARGET_VS_TRANSFORMERS}x transformers (is {vs_tf:.2f}x)",
                           vs_tf >= TARGET_VS_TRANSFORMERS))
    if notes:
        print("\n" + "\n".join(notes))
    print("\n### targets (issues 5 and 11)\n")
    for name, what, ok in checks:
        print(f"- [{'x' if ok else ' '}] {name}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
