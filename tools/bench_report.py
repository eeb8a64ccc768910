#!/usr/bin/env python3
"""bench_report: joins the JSON files of tools/bench (mcm) and tools/bench_torch.py (PyTorch)
into one Markdown table, prints it and writes it to bench/<date>-<device-slug>.md (the last
step of `make bench`). Standard library only.

  python3 tools/bench_report.py MCM.json TORCH.json [--out-dir bench] [--out FILE.md]

Columns: case, dtype, mcm ms, PyTorch ms (medians), speedup = PyTorch ms / mcm ms (above 1:
mcm is faster), mcm TFLOP/s (mcm's matrix-product FLOPs of one iteration over its median).
Below the table: each row's shape, and notes where the two sides disagree (a shape, a FLOP
count off by more than 5 %, a row missing or failed on one side).
"""
import argparse
import json
import os
import re
import sys


def load(path, impl):
    try:
        with open(path) as fh:
            d = json.load(fh)
    except (OSError, ValueError) as e:
        sys.exit(f"bench_report: {path}: {e}")
    if d.get("impl") != impl or not isinstance(d.get("cases"), list):
        sys.exit(f"bench_report: {path}: not the JSON of the {impl} side (impl '{d.get('impl')}')")
    return d


def slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "device"


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def report(m, t):
    if m["device_kind"] != t["device_kind"] or m["size"] != t["size"]:
        sys.exit(f"bench_report: the two runs differ: mcm {m['device_kind']} / {m['size']} size, "
                 f"PyTorch {t['device_kind']} / {t['size']} size")
    cpu, small = m["device_kind"] == "cpu", m["size"] == "small"
    date = m["date"][:10]
    title = "CPU, small size: a check that the harness runs, not a performance result" if cpu and small else \
        f"{t['device']}, {m['size']} size"
    lines = [f"# make bench: mcm vs PyTorch ({title})", "",
             f"- date: {m['date']} (mcm), {t['date']} (PyTorch)",
             f"- device: mcm `{m['device']}`; PyTorch `{t['device']}`",
             f"- mcm: {m['version']}",
             f"- PyTorch: {t['version']}; TF32 {'allowed' if t.get('tf32') else 'off'} in fp32 rows "
             f"(mcm's fp32 never uses TF32)",
             f"- median of {m['iters']} (mcm) / {t['iters']} (PyTorch) timed iterations after "
             f"{m['warmup']} / {t['warmup']} warm-up; speedup = PyTorch ms / mcm ms (above 1: mcm faster); "
             f"TFLOP/s from mcm's count of matrix-product FLOPs", "",
             "| case | dtype | mcm ms | PyTorch ms | speedup | mcm TFLOP/s |",
             "|---|---|---:|---:|---:|---:|"]
    trows = {(r["case"], r["dtype"]): r for r in t["cases"]}
    mrows = {(r["case"], r["dtype"]): r for r in m["cases"]}
    keys = list(mrows) + [k for k in trows if k not in mrows]
    shapes, notes = {}, []
    for k in keys:
        mr, tr = mrows.get(k), trows.get(k)
        name = f"{k[0]} {k[1]}"
        mms = mr["ms"] if mr else None
        tms = tr.get("ms") if tr else None
        speed = f"{tms / mms:.2f}×" if mms and tms else "—"
        tcell = fmt(tms, ".3f") if not (tr and "error" in tr) else "error"
        lines.append(f"| {k[0]} | {k[1]} | {fmt(mms, '.3f')} | {tcell} | {speed} | "
                     f"{fmt(mr['tflops'] if mr else None, '.3g')} |")
        shapes.setdefault(k[0], (mr or tr or {}).get("shape"))
        if not mr:
            notes.append(f"{name}: no mcm row")
        if not tr:
            notes.append(f"{name}: no PyTorch row")
        elif "error" in tr:
            notes.append(f"{name}: PyTorch failed: {tr['error']}")
        if mr and tr and "error" not in tr:
            if mr["shape"] != tr["shape"]:
                notes.append(f"{name}: shapes differ: mcm `{mr['shape']}`, PyTorch `{tr['shape']}`")
            if tr.get("flops"):
                ratio = mr["flops"] / tr["flops"]
                if abs(ratio - 1) > 0.05:
                    notes.append(f"{name}: FLOP counts differ: mcm {mr['flops'] * 1e-9:.2f} G, PyTorch's "
                                 f"FlopCounterMode {tr['flops'] * 1e-9:.2f} G")
    for side, d in (("mcm", m), ("PyTorch", t)):
        if not d.get("complete", True):
            notes.append(f"the {side} run stopped early (timeout or failure): rows after its last one are missing")
    lines += ["", "Shapes (batch, inputs -> outputs):", ""] + [f"- {c}: {s}" for c, s in shapes.items() if s]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    fname = f"{date}-{slug(t['device'] if not cpu else 'cpu')}{'-small' if small else ''}.md"
    return "\n".join(lines) + "\n", fname


def main():
    p = argparse.ArgumentParser(description="mcm vs PyTorch benchmark table (see the module docstring)")
    p.add_argument("mcm_json")
    p.add_argument("torch_json")
    p.add_argument("--out-dir", default="bench", help="folder of the Markdown file (default bench)")
    p.add_argument("--out", help="the Markdown file (default OUT_DIR/<date>-<device-slug>.md)")
    a = p.parse_args()
    text, fname = report(load(a.mcm_json, "mcm"), load(a.torch_json, "pytorch"))
    out = a.out or os.path.join(a.out_dir, fname)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, out)
    print(text, end="")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
