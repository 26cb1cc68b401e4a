"""Tables and plots of the peer benchmark (plain SVG, no plotting package)."""

import math
import os

import numpy as np

TARGETS = (1e-3, 1e-4)
COLORS = {"asyb": "#d62728", "liblinear": "#1f77b4", "snapml": "#2ca02c", "skglm": "#9467bd",
          "vw": "#8c564b", "vw-sgd": "#e377c2"}
FLOOR = 1e-9


def rel(psi, psi_star):
    return (psi - psi_star) / abs(psi_star)


def time_to(points, psi_star, target):
    """Smallest time among points at or below the target (None if none is)."""
    ts = [p["secs"] for p in points if rel(p["psi"], psi_star) <= target]
    return min(ts) if ts else None


def time_to_runs(runs, psi_star, target):
    """Median over repeated runs of the time to a target; None unless at least half
    of the runs reach it (the unreached count as slowest)."""
    ts = [time_to(r, psi_star, target) for r in runs]
    got = sorted(t for t in ts if t is not None)
    if 2 * len(got) < len(ts) or not got:
        return None
    ts = got + [math.inf] * (len(ts) - len(got))
    med = float(np.median(ts))
    return med if math.isfinite(med) else None


def fmt_secs(t):
    if t is None:
        return "—"
    if t < 0.01:
        return f"{t * 1000:.1f} ms"
    if t < 10:
        return f"{t:.3g} s"
    return f"{t:.1f} s"


def fmt_rel(r):
    if r is None:
        return "—"
    if r <= 0:
        return "0"
    return f"{r:.1e}"


def table(results, psi_star):
    """Markdown table: times to 1e-3 and 1e-4 (fit-only and end to end), the tightest
    fit's relative suboptimality and a note per solver."""
    head = ("| solver | threads | fit 1e-3 | fit 1e-4 | end to end 1e-3 | end to end 1e-4 "
            "| best rel. subopt. | note |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["name"] == "asyb-fista":
            continue
        if r["status"] != "ok":
            lines.append(f"| {r['label']} | {r['threads']} | | | | | | {r['status']}: {r['note']} |")
            continue
        cells = []
        for kind in ("fit", "e2e"):
            runs = r.get("runs", {}).get(kind) or [r[kind]]
            for tgt in TARGETS:
                cells.append(fmt_secs(time_to_runs(runs, psi_star, tgt)))
        best = min((rel(p["psi"], psi_star) for p in r["fit"] + r["e2e"]), default=None)
        lines.append(f"| {r['label']} | {r['threads']} | " + " | ".join(cells)
                     + f" | {fmt_rel(best)} | {r['note']} |")
    return "\n".join(lines)


def svg_plot(path, title, results, psi_star):
    """Two panels (fit-only, end to end): relative suboptimality against seconds,
    both on log scales, one line per solver."""
    W, H = 1100, 500
    panel_w, panel_h = 440, 330
    x0s = (80, 620)
    y0 = 60
    series = []
    for r in results:
        if r["status"] != "ok" or r["name"] == "asyb-fista":
            continue
        for k in ("fit", "e2e"):
            pts = sorted(r[k], key=lambda p: p["secs"])
            xy = [(max(p["secs"], 1e-4), max(rel(p["psi"], psi_star), FLOOR)) for p in pts]
            series.append((r["name"], r["label"], k, xy))
    xs = [x for s in series for x, _ in s[3]] or [1e-3, 1]
    ys = [y for s in series for _, y in s[3]] or [FLOOR, 1]
    xlo = 10 ** math.floor(math.log10(min(xs)))
    xhi = 10 ** math.ceil(math.log10(max(xs) * 1.01))
    ylo = 10 ** math.floor(math.log10(max(min(ys), FLOOR)))
    yhi = 10 ** math.ceil(math.log10(max(ys) * 1.01))
    if yhi <= ylo:
        yhi = ylo * 10
    if xhi <= xlo:
        xhi = xlo * 10

    def X(x, x0):
        return x0 + panel_w * (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo))

    def Y(y):
        return y0 + panel_h * (math.log10(yhi) - math.log10(y)) / (math.log10(yhi) - math.log10(ylo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="15">{_esc(title)}</text>']
    for i, (x0, name) in enumerate(zip(x0s, ("fit-only (data in memory)", "end to end (from the file)"))):
        out.append(f'<rect x="{x0}" y="{y0}" width="{panel_w}" height="{panel_h}" fill="none" stroke="#444"/>')
        out.append(f'<text x="{x0 + panel_w / 2}" y="{y0 - 8}" text-anchor="middle">{name}</text>')
        e = math.log10(xlo)
        while e <= math.log10(xhi) + 1e-9:
            px = X(10 ** e, x0)
            out.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + panel_h}" stroke="#eee"/>')
            out.append(f'<text x="{px:.1f}" y="{y0 + panel_h + 16}" text-anchor="middle">{_pow10(e)}</text>')
            e += 1
        e = math.log10(ylo)
        while e <= math.log10(yhi) + 1e-9:
            py = Y(10 ** e)
            out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x0 + panel_w}" y2="{py:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end">{_pow10(e)}</text>')
            e += 1
        for t in TARGETS:
            if ylo <= t <= yhi:
                py = Y(t)
                out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x0 + panel_w}" y2="{py:.1f}" '
                           f'stroke="#999" stroke-dasharray="4,3"/>')
        out.append(f'<text x="{x0 + panel_w / 2}" y="{y0 + panel_h + 34}" text-anchor="middle">seconds</text>')
        if i == 0:
            out.append(f'<text x="18" y="{y0 + panel_h / 2}" text-anchor="middle" '
                       f'transform="rotate(-90 18 {y0 + panel_h / 2})">(Psi - Psi*) / Psi*</text>')
    for name, _, kind, xy in series:
        x0 = x0s[0 if kind == "fit" else 1]
        color = COLORS.get(name, "#333")
        pts = " ".join(f"{X(x, x0):.1f},{Y(y):.1f}" for x, y in xy)
        dash = ' stroke-dasharray="6,3"' if name.startswith("vw") else ""
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.8"{dash}/>')
        for x, y in xy:
            out.append(f'<circle cx="{X(x, x0):.1f}" cy="{Y(y):.1f}" r="2.5" fill="{color}"/>')
    ly = y0 + panel_h + 56
    lx = 80
    seen = []
    for name, label, _, _ in series:
        if name in seen:
            continue
        seen.append(name)
        color = COLORS.get(name, "#333")
        width = 40 + 6.6 * len(label)
        if lx + width > W - 10:
            lx = 80
            ly += 20
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" stroke-width="3"/>')
        out.append(f'<text x="{lx + 30}" y="{ly + 4}">{_esc(label)}</text>')
        lx += width
    out.append(f'<text x="{W - 10}" y="{H - 8}" text-anchor="end" fill="#666">grey dashed lines: 1e-3 and '
               f'1e-4; points at {FLOOR:g} are at or below it; each peer point is a separate fit</text>')
    out.append("</svg>")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(path + ".tmp", path)


def _pow10(e):
    e = int(round(e))
    return f"1e{e}" if e not in (0, 1, 2) else str(10 ** e)


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
