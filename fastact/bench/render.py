"""Presentation of a run's result: the terminal table (rich), markdown, the plot."""

from __future__ import annotations

import math

from .cases import PEERS, fmt_shape, warmup_shapes


def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 100 else f"{r:.0f}x"


def fmt_pct(p):
    return "-" if p is None else f"{p:.0f}%"


def _shown_backends(result):
    bs = result["settings"]["backends"]
    native = [b for b in bs if b != "numpy"]
    return native or bs


def _primary(rs, label, op):
    """The record the table shows for ``label``: fastact and the reference with
    ``out=`` when the op has it; a peer called the fastest way it offers."""
    mine = [r for r in rs if r["label"] == label and r["op"] == op]
    if not mine:
        return None
    if label in PEERS:
        return min(mine, key=lambda r: r["median_s"])
    return next((r for r in mine if r["mode"] == "out"), mine[0])


def _alloc(rs, label, op):
    return next((r for r in rs if r["label"] == label and r["op"] == op
                 and r["mode"] == "alloc"), None)


def _groups(result):
    """Records grouped per (dtype, threads), then per shape: {(dt, t): {shape: [records]}}."""
    out = {}
    for r in result["records"]:
        out.setdefault((r["dtype"], r["threads"]), {}).setdefault(tuple(r["shape"]), []).append(r)
    return out


def table_rows(result):
    """The summary table as plain cells: per (dtype, threads) a list of row dicts."""
    tables = {}
    shown = _shown_backends(result)
    ops = result["settings"]["ops"]
    for key, by_shape in _groups(result).items():
        rows = []
        for op in ops:
            for shape, rs in by_shape.items():
                copy = next((r for r in rs if r["op"] == "copy"), None)
                ref = _primary(rs, "numpy", op)
                peer = None
                for name in PEERS:
                    pr = _primary(rs, name, op)
                    if pr is not None and (peer is None or pr["median_s"] < peer["median_s"]):
                        peer = pr
                if ref is None and peer is None and not any(
                        _primary(rs, b, op) for b in shown):
                    continue
                for i, b in enumerate(shown):
                    r = _primary(rs, b, op) or {}
                    a = _alloc(rs, b, op)
                    rows.append({
                        "op": op, "shape": fmt_shape(shape), "first": i == 0,
                        "copy": copy["median_s"] if copy else None,
                        "numpy": ref["median_s"] if ref else None,
                        "peer": peer["label"] if peer else None,
                        "peer_s": peer["median_s"] if peer else None,
                        "backend": b if r else f"{b} (skipped)",
                        "out": r["median_s"] if r.get("mode") == "out" else None,
                        "alloc": a["median_s"] if a else None,
                        "x_numpy": r.get("speedup_vs_numpy"),
                        "x_peer": r.get("speedup_vs_best_peer"),
                        "copy_pct": r.get("copy_pct"),
                    })
        tables[key] = rows
    return tables


def headline(result):
    """Per shown backend and (dtype, threads): geometric means and ranges of the
    table's ratios over every op and shape."""
    out = []
    for (dt, t), rows in table_rows(result).items():
        for b in _shown_backends(result):
            mine = [r for r in rows if r["backend"] == b]
            line = {"dtype": dt, "threads": t, "backend": b}
            for key in ("x_numpy", "x_peer"):
                v = [r[key] for r in mine if r[key]]
                if v:
                    line[key] = (math.exp(sum(math.log(x) for x in v) / len(v)), min(v), max(v))
            out.append(line)
    return out


def _headline_text(result):
    lines = []
    for h in headline(result):
        parts = []
        if "x_numpy" in h:
            g, lo, hi = h["x_numpy"]
            parts.append(f"{g:.2f}x the NumPy reference (range {lo:.2f}-{hi:.2f}x)")
        if "x_peer" in h:
            g, lo, hi = h["x_peer"]
            parts.append(f"{g:.2f}x the best installed peer ({lo:.2f}-{hi:.2f}x)")
        if parts:
            lines.append(f"fastact[{h['backend']}], {h['dtype']}, {h['threads']} thread(s): "
                         f"geometric mean " + "; ".join(parts))
    return lines


_FOOTNOTE = (
    "Times: median per call. 'out=' = result written into a preallocated array; 'alloc' = "
    "the plain call, allocating its result (as a NumPy user calls it). Ratios use the "
    "out= time (ops that return only a loss: the plain call), against the NumPy reference "
    "(fastact backend=\"numpy\", also out=) and the fastest installed peer called the "
    "fastest way it offers (torch with out= where it has one; SciPy and JAX allocate). "
    "% copy = time of np.copyto of the (n, k) input / op time (over 100% for ops that "
    "write little, such as logsumexp and the loss: a copy writes as much as it reads).")


def _first_call_title(result):
    shapes = [fmt_shape(s) for s in warmup_shapes(result["settings"]["shapes"])]
    total = sum(f["seconds"] for f in result["first_calls"])
    return (f"first calls, before timing: Numba compilation (once: cached for later runs), "
            f"library loading — {total:.1f} s in all (sum over the {' and '.join(shapes)} "
            f"inputs; not in the times above)")


def _first_call_rows(result):
    """{(label, dtype): {op: seconds}}: the first calls of an op summed over the
    warm-up inputs and modes — what compiling and loading cost before timing."""
    out = {}
    for fc in result["first_calls"]:
        d = out.setdefault((fc["label"], fc["dtype"]), {})
        d[fc["op"]] = d.get(fc["op"], 0.0) + fc["seconds"]
    return out


def render_rich(result, console):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def ratio(v):
        if v is None:
            return Text("-")
        style = "bold green" if v >= 1.05 else ("red" if v < 0.95 else "")
        return Text(fmt_ratio(v), style=style)

    m = result["machine"]
    console.print(Text(f"fastact bench  {m['cpu']}, {m['cores']} cores, {m['simd_level']}; "
                       f"{_versions_line(result)}", style="bold"))
    for (dt, t), rows in table_rows(result).items():
        tb = Table(title=f"{dt}, {t} thread(s)", box=box.SIMPLE_HEAD, header_style="bold",
                   title_style="bold", pad_edge=False)
        for name, just in (("op", "left"), ("shape", "left"), ("copy", "right"),
                           ("NumPy ref", "right"), ("best peer", "right"),
                           ("fastact", "left"), ("out=", "right"), ("alloc", "right"),
                           ("vs NumPy", "right"), ("vs peer", "right"), ("% copy", "right")):
            tb.add_column(name, justify=just, no_wrap=True)
        prev_op = None
        for i, r in enumerate(rows):
            if prev_op is not None and r["op"] != prev_op and r["first"]:
                tb.add_section()
            new_op = r["op"] != prev_op
            prev_op = r["op"]
            first = r["first"]
            tb.add_row(
                r["op"] if new_op else "",
                r["shape"] if first else "",
                fmt_time(r["copy"]) if first else "",
                fmt_time(r["numpy"]) if first else "",
                (f"{r['peer']} {fmt_time(r['peer_s'])}" if r["peer"] else "-") if first else "",
                r["backend"], fmt_time(r["out"]), fmt_time(r["alloc"]),
                ratio(r["x_numpy"]), ratio(r["x_peer"]), fmt_pct(r["copy_pct"]))
        console.print(tb)
    console.print(Text(_FOOTNOTE, style="dim"))
    _render_first_calls_rich(result, console)
    for line in _headline_text(result):
        console.print(Text(line, style="bold"))
    for line in _skipped_lines(result):
        console.print(Text(f"skipped: {line}", style="yellow"))
    for n in result["notes"]:
        console.print(Text(f"note: {n}", style="yellow"))


def _render_first_calls_rich(result, console):
    from rich import box
    from rich.table import Table

    rows = _first_call_rows(result)
    if not rows:
        return
    tb = Table(title=_first_call_title(result),
               box=box.SIMPLE_HEAD, title_style="bold", pad_edge=False)
    header, body = _first_call_table(result)
    for i, h in enumerate(header):
        tb.add_column(h, justify="left" if i == 0 else "right")
    for row in body:
        tb.add_row(*row)
    console.print(tb)


def _first_call_table(result):
    """(header, rows): one row per op, one column per implementation (and dtype)."""
    fc = _first_call_rows(result)
    cols = list(fc)
    multi = len({dt for _, dt in cols}) > 1
    header = ["op"] + [f"{lab} {dt}" if multi else lab for lab, dt in cols]
    body = [[op] + [fmt_time(fc[c].get(op)) for c in cols] for op in result["settings"]["ops"]]
    return header, body


def _skipped_lines(result):
    """One line per (implementation, reason): the ops it could not run."""
    groups = {}
    for s in result["skipped"]:
        groups.setdefault((s["label"], s["reason"]), []).append(s["op"])
    return [f"{label} on {', '.join(ops)}: {reason}" for (label, reason), ops in groups.items()]


def _versions_line(result):
    v = result["versions"]
    keys = ["fastact", "numpy", "numba", "scipy", "torch", "jax"]
    return ", ".join(f"{k} {v[k]}" for k in keys if v.get(k))


def render_markdown(result):
    """The summary as a markdown table with machine, versions and command under it."""
    out = []
    shown = _shown_backends(result)
    for (dt, t), rows in table_rows(result).items():
        # one row per (op, shape), a column group per fastact backend
        out.append(f"**{dt}, {t} thread(s)** — times with `out=`; 'vs' = speed-up\n")
        head = ["op", "shape", "NumPy ref", "best peer"]
        for b in shown:
            head += [f"fastact[{b}]", "vs NumPy", "vs peer", "% copy"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|---|---|" + "--:|" * (len(head) - 2))
        prev = None
        for i in range(0, len(rows), len(shown)):
            group = rows[i:i + len(shown)]
            r0 = group[0]
            cells = [f"**{r0['op']}**" if r0["op"] != prev else "", r0["shape"],
                     fmt_time(r0["numpy"]),
                     f"{r0['peer']} {fmt_time(r0['peer_s'])}" if r0["peer"] else "-"]
            for r in group:
                cells += [fmt_time(r["out"] if r["out"] is not None else r["alloc"]),
                          f"**{fmt_ratio(r['x_numpy'])}**" if r["x_numpy"] else "-",
                          fmt_ratio(r["x_peer"]), fmt_pct(r["copy_pct"])]
            out.append("| " + " | ".join(cells) + " |")
            prev = r0["op"]
        out.append("")
    if result["first_calls"]:
        header, body = _first_call_table(result)
        out.append(_first_call_title(result)[0].upper() + _first_call_title(result)[1:] + ":\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|---|" + "--:|" * (len(header) - 1))
        for row in body:
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    for line in _headline_text(result):
        out.append(f"- {line}")
    if _headline_text(result):
        out.append("")
    m = result["machine"]
    out.append(_FOOTNOTE + " The allocating calls' times are in the terminal table and "
               "the JSON.\n")
    out.append(f"Command: `{result['command']}` ({result['elapsed_s']:.0f} s).  ")
    out.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['arch']}, SIMD {m['simd_level']}, "
               f"{m['platform']}, Python {m['python']}.  ")
    out.append(f"Versions: {_versions_line(result)}.  ")
    avail = [b for b, d in result["backends"].items() if d["available"]]
    out.append(f"Backends available: {', '.join(avail)}.")
    for line in _skipped_lines(result):
        out.append(f"Skipped: {line}.  ")
    for n in result["notes"]:
        out.append(f"Note: {n}.")
    return "\n".join(out) + "\n"


def plot(result, path):
    """Speed-up over the NumPy reference, one panel per op, grouped bars per shape."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = _groups(result)
    if not groups:
        raise ValueError("nothing was measured: no plot")
    (dt, t), by_shape = next(iter(groups.items()))
    ops = result["settings"]["ops"]
    labels = [b for b in _shown_backends(result) if b != "numpy"]
    labels += [p for p in result["settings"]["peers"]]
    labels = [lab for lab in labels
              if any(r["label"] == lab for rs in by_shape.values() for r in rs)]
    shapes = list(by_shape)
    ncols = min(4, len(ops))
    nrows = math.ceil(len(ops) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.4 * nrows + 0.8),
                             squeeze=False, sharey=True)
    colors = {"c": "#1b7837", "numba": "#5aae61", "numpy": "#999999", "scipy": "#2166ac",
              "torch": "#d6604d", "jax": "#8073ac"}
    width = 0.8 / max(1, len(labels))
    all_vals = []
    for ax, op in zip(axes.flat, ops):
        for j, lab in enumerate(labels):
            xs, vs = [], []
            for i, s in enumerate(shapes):
                r = _primary(by_shape[s], lab, op)
                if r is not None and r["speedup_vs_numpy"]:
                    xs.append(i + (j - (len(labels) - 1) / 2) * width)
                    vs.append(r["speedup_vs_numpy"])
            if not vs:
                continue
            all_vals += vs
            name = f"fastact[{lab}]" if lab not in PEERS else lab
            bars = ax.bar(xs, vs, width=width * 0.95, color=colors.get(lab), label=name)
            if len(shapes) * len(labels) <= 24:
                ax.bar_label(bars, labels=[f"{v:.1f}" if v >= 1 else f"{v:.2g}" for v in vs],
                             fontsize=6.5, padding=1)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(op, fontsize=11, fontweight="bold")
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels([fmt_shape(s) for s in shapes], rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
    for ax in list(axes.flat)[len(ops):]:
        ax.set_visible(False)
    if all_vals:
        lo, hi = min(all_vals + [1.0]), max(all_vals + [1.0])
        axes[0, 0].set_ylim(lo / 1.6, hi * 1.8)
    for ax in axes[:, 0]:
        ax.set_ylabel("speed-up over NumPy (x)")
    handles, names = [], []
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="upper center", ncol=len(names), frameon=False,
               bbox_to_anchor=(0.5, 0.995))
    m = result["machine"]
    fig.suptitle(f"fastact bench: speed-up over the NumPy reference (higher is better; 1 = "
                 f"NumPy), {dt}, {t} thread(s) — {m['cpu']}, {m['cores']} cores",
                 y=0.935, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.91))
    fig.savefig(path, dpi=130)
    plt.close(fig)
