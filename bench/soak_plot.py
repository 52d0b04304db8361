#!/usr/bin/env python3
"""Draws the soak samples (tests/soak.rs with SOAK_OUT) as one SVG with stacked panels against time, node
restarts marked: resident memory; the store's RocksDB memory (memtables and block cache, when the samples have
them); open file descriptors; data folder size. With --png, headless Chromium
(installed by .ci/setup) renders the SVG to a PNG.

    bench/soak_plot.py SOAK_OUT/soak.csv OUT.svg [--png OUT.png] [--title TEXT]
"""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

WIDTH, PANEL_H, MARGIN_L, MARGIN_R, MARGIN_T, GAP = 900, 190, 90, 20, 60, 40
MIB_OF_KIB = lambda v: v / 1024
# (label, [(column, colour)], scale): one panel each, one line per column present in the samples.
PANELS = [
    ("resident memory (MiB)", [("rss_kib", "#1f5fbf")], MIB_OF_KIB),
    ("store memory (MiB): memtables (green), block cache (orange)",
     [("memtable_kib", "#2a9d3a"), ("block_cache_kib", "#e07b00")], MIB_OF_KIB),
    ("open file descriptors", [("fds", "#1f5fbf")], lambda v: v),
    ("data folder (MiB)", [("store_bytes", "#1f5fbf")], lambda v: v / (1 << 20)),
]


def usage():
    print(__doc__.strip(), file=sys.stderr)
    sys.exit(2)


def nice_max(v):
    if v <= 0:
        return 1
    step = 10 ** (len(str(int(v))) - 1)
    return (int(v / step) + 1) * step


def main(argv):
    if len(argv) < 3:
        usage()
    src, out = Path(argv[1]), Path(argv[2])
    png, title = None, "ilp-bridge soak"
    rest = argv[3:]
    while rest:
        if rest[0] == "--png" and len(rest) > 1:
            png, rest = Path(rest[1]), rest[2:]
        elif rest[0] == "--title" and len(rest) > 1:
            title, rest = rest[1], rest[2:]
        else:
            usage()
    with src.open() as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    if not rows:
        sys.exit(f"{src}: no samples")
    t_max = max(r["seconds"] for r in rows)
    panels = [(label, [(k, c) for k, c in series if k in rows[0]], scale) for label, series, scale in PANELS]
    panels = [p for p in panels if p[1]]
    plot_w = WIDTH - MARGIN_L - MARGIN_R
    height = MARGIN_T + len(panels) * (PANEL_H + GAP)
    x = lambda t: MARGIN_L + plot_w * t / t_max
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN_L}" y="22" font-size="15">{title}</text>',
    ]
    restarts = [r["seconds"] for a, r in zip(rows, rows[1:]) if r["lifetime"] != a["lifetime"]]
    for i, (label, series, scale) in enumerate(panels):
        top = MARGIN_T + i * (PANEL_H + GAP)
        values = [scale(r[key]) for r in rows for key, _ in series]
        v_max = nice_max(max(values))
        y = lambda v: top + PANEL_H - PANEL_H * v / v_max
        parts.append(f'<rect x="{MARGIN_L}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{MARGIN_L}" y="{top - 6}">{label}</text>')
        for frac in (0, 0.5, 1):
            v = v_max * frac
            parts.append(f'<text x="{MARGIN_L - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        for t in restarts:
            parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + PANEL_H}" '
                         'stroke="#d33" stroke-dasharray="3,3"/>')
        # One polyline per lifetime: a restart is a new process.
        for key, colour in series:
            for life in sorted({r["lifetime"] for r in rows}):
                pts = " ".join(f"{x(r['seconds']):.1f},{y(scale(r[key])):.1f}" for r in rows if r["lifetime"] == life)
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        if i == len(panels) - 1:
            for frac in (0, 0.25, 0.5, 0.75, 1):
                t = t_max * frac
                parts.append(f'<text x="{x(t):.1f}" y="{top + PANEL_H + 16}" text-anchor="middle">{t / 60:.0f} min</text>')
    parts.append(f'<text x="{WIDTH - MARGIN_R}" y="{MARGIN_T - 6}" text-anchor="end" fill="#d33">'
                 'dashed: node restarts</text>')
    parts.append("</svg>")
    out.write_text("\n".join(parts))
    if png:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if not chromium:
            sys.exit("--png needs chromium (installed by .ci/setup)")
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={png.resolve()}", f"--window-size={WIDTH},{height}",
                        out.resolve().as_uri()], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main(sys.argv)
