"""Summarizes and plots a scripts/soak.sh run (standard library only).

usage: soak_report.py DIR [--max_rss_growth=PCT] [--server_rc=N]

Reads DIR/requests.tsv (end ms, op, latency ms, status) and DIR/rss.tsv (ms, RSS KiB); writes
DIR/summary.txt (per operation: count, statuses, p50/p99 latency; RSS after the first minute,
at the end and its peak) and DIR/soak.svg (RSS and per-minute p50/p99 latency over time).
Exits 1 when the server's SIGTERM exit code was not 0, a request ended with an unexpected
status, or the RSS grew by more than --max_rss_growth percent after the first minute.
"""

import argparse
import collections
import os
import sys

# Statuses a healthy server may answer in the soak: only the deadlines set on purpose. The route
# skips the variant while it reloads, so no request through it may fail.
EXPECTED = {
    "generate": {"OK"},
    "generate_deadline": {"OK", "DEADLINE_EXCEEDED"},
    "score": {"OK"},
    "tokenize": {"OK"},
    "load": {"OK"},
    "unload": {"OK"},
}


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def read_tsv(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def svg(rss, minutes, out_path):
    """Two stacked panels: RSS (MiB) and per-minute latency p50/p99 of generate (ms)."""
    w, h, pad = 900, 560, 60
    panel = (h - 3 * pad) / 2
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>']

    def plot(top, title, series, unit):
        xs = [x for _, pts, _ in series for x, _ in pts] or [0, 1]
        ys = [y for _, pts, _ in series for _, y in pts] or [0, 1]
        x0, x1 = min(xs), max(max(xs), min(xs) + 1e-9)
        y0, y1 = 0.0, max(ys) * 1.1 or 1.0
        sx = lambda x: pad + (x - x0) / (x1 - x0) * (w - 2 * pad)
        sy = lambda y: top + panel - (y - y0) / (y1 - y0) * panel
        parts.append(f'<text x="{pad}" y="{top - 8}" font-weight="bold">{title}</text>')
        parts.append(f'<rect x="{pad}" y="{top}" width="{w - 2 * pad}" height="{panel}" '
                     'fill="none" stroke="#999"/>')
        for i in range(5):
            y = y0 + (y1 - y0) * i / 4
            parts.append(f'<text x="{pad - 6}" y="{sy(y) + 4}" text-anchor="end">{y:.0f}</text>')
        for i in range(5):
            x = x0 + (x1 - x0) * i / 4
            parts.append(f'<text x="{sx(x)}" y="{top + panel + 16}" text-anchor="middle">'
                         f'{x:.1f} min</text>')
        parts.append(f'<text x="12" y="{top + panel / 2}" transform="rotate(-90 12 '
                     f'{top + panel / 2})">{unit}</text>')
        for i, (name, pts, color) in enumerate(series):
            if pts:
                d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
                parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" '
                             'stroke-width="1.5"/>')
            parts.append(f'<text x="{w - pad - 160}" y="{top + 16 + 14 * i}" fill="{color}">'
                         f'{name}</text>')

    plot(pad, "Resident memory of the server", [("RSS", rss, "#1f77b4")], "MiB")
    plot(2 * pad + panel, "Generate latency per minute (32 tokens, through the route)",
         [("p50", [(m, p) for m, p, _ in minutes], "#2ca02c"),
          ("p99", [(m, q) for m, _, q in minutes], "#d62728")], "ms")
    parts.append("</svg>")
    with open(out_path, "w") as f:
        f.write("\n".join(parts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--max_rss_growth", type=float, default=10.0)
    ap.add_argument("--server_rc", type=int, default=0)
    args = ap.parse_args()
    requests = read_tsv(os.path.join(args.dir, "requests.tsv"))
    rss_rows = [(int(t), int(k)) for t, k in read_tsv(os.path.join(args.dir, "rss.tsv")) if k]
    if not rss_rows or not requests:
        print("soak: nothing recorded")
        return 1
    t0 = rss_rows[0][0]
    rss = [((t - t0) / 60000.0, k / 1024.0) for t, k in rss_rows]

    lines, failures = [], []
    by_op = collections.defaultdict(list)
    statuses = collections.defaultdict(collections.Counter)
    per_minute = collections.defaultdict(list)
    for end, op, latency, status in requests:
        by_op[op].append(int(latency))
        statuses[op][status] += 1
        if op == "generate" and status == "OK":
            per_minute[(int(end) - t0) // 60000].append(int(latency))
        if status not in EXPECTED.get(op, {"OK"}):
            failures.append(f"{op} ended {status}")
    lines.append(f"{'op':18} {'count':>7} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for op in sorted(by_op):
        lat = by_op[op]
        st = ", ".join(f"{k} {v}" for k, v in statuses[op].most_common())
        lines.append(f"{op:18} {len(lat):7d} {percentile(lat, 0.5):8.0f} "
                     f"{percentile(lat, 0.99):8.0f}  {st}")
    minutes = [(m + 0.5, percentile(v, 0.5), percentile(v, 0.99))
               for m, v in sorted(per_minute.items())]
    if minutes:
        lines.append("generate p50/p99 per minute: " +
                     " ".join(f"{p:.0f}/{q:.0f}" for _, p, q in minutes))

    after_warmup = [k for m, k in rss if m >= 1.0] or [k for _, k in rss]
    base, end, peak = after_warmup[0], rss[-1][1], max(k for _, k in rss)
    growth = (end - base) / base * 100.0
    lines.append(f"RSS: {rss[0][1]:.0f} MiB at start, {base:.0f} after the first minute, "
                 f"{end:.0f} at the end ({growth:+.1f}%), peak {peak:.0f}; "
                 f"{rss[-1][0]:.1f} minutes, {len(requests)} requests")
    lines.append(f"server exit code after SIGTERM: {args.server_rc}")
    if growth > args.max_rss_growth:
        failures.append(f"RSS grew {growth:.1f}% (> {args.max_rss_growth}%)")
    if args.server_rc != 0:
        failures.append(f"the server exited {args.server_rc} on SIGTERM")
    unique = sorted(set(failures))
    lines.append("result: " + ("ok" if not unique else "FAILED: " + "; ".join(
        f"{f} (x{failures.count(f)})" for f in unique)))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.dir, "summary.txt"), "w") as f:
        f.write(text)
    svg(rss, minutes, os.path.join(args.dir, "soak.svg"))
    print(text, end="")
    print(f"plot: {os.path.join(args.dir, 'soak.svg')}")
    return 1 if unique else 0


if __name__ == "__main__":
    sys.exit(main())
