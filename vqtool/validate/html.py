"""report.html: one self-contained page (plots as inline PNG, videos as inline MP4), readable offline.

Plots are drawn with matplotlib's Agg backend: PSNR and SSIM per frame, the latent relative
error per sampling step, temporal flicker per frame, and the weight error by block and by role.
Videos larger than ``EMBED_LIMIT`` bytes are linked by relative path instead of embedded.
"""

from __future__ import annotations

import base64
import html
import io
import os
from typing import Any

from vqtool.validate.metrics import from_json_number
from vqtool.validate.report import summary_rows

EMBED_LIMIT = 8 * 1024 * 1024

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:1em;overflow:auto}
.videos{display:flex;flex-wrap:wrap;gap:1em}.videos figure{margin:0}video{image-rendering:pixelated}
figcaption{font-size:85%;color:#555;max-width:480px}img{max-width:100%}"""


def _num(v) -> float:
    f = from_json_number(v)
    return float("nan") if f is None else f


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _color(report: dict[str, Any], name: str):
    """One color per candidate in every plot (tab10, or tab20 beyond 10 candidates)."""
    import matplotlib

    names = [c["name"] for c in report["candidates"]]
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return cmap(names.index(name) % cmap.N)


def _legend(fig, ax) -> None:
    """The legend outside the axes, on the right."""
    if ax.get_legend_handles_labels()[0]:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8)


def _finite(values: list[float], cap: float) -> list[float]:
    """Values with ``inf`` replaced by ``cap`` (drawn at the top of the axis, marked in the legend)."""
    return [cap if v == float("inf") else v for v in values]


def _per_frame_plots(report: dict[str, Any]) -> list[str]:
    import matplotlib.pyplot as plt

    out = []
    ids = [v["id"] for v in report["reference"]["videos"]]
    for key, label in (("psnr_per_frame", "PSNR (dB)"), ("ssim_per_frame", "SSIM")):
        ncols = min(4, len(ids))
        nrows = -(-len(ids) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols + 1.5, 3 * nrows), squeeze=False,
                                 layout="constrained")
        for ax in axes.flat[len(ids):]:
            ax.set_visible(False)
        for ax, vid in zip(axes.flat, ids):
            finite = [_num(x) for c in report["candidates"] for v in c["videos"] if v["id"] == vid
                      for x in v[key] if _num(x) != float("inf")]
            cap = (max(finite) + 5) if finite else 100.0
            for c in report["candidates"]:
                v = next(v for v in c["videos"] if v["id"] == vid)
                vals = [_num(x) for x in v[key]]
                name = c["name"] + (" (identical)" if any(x == float("inf") for x in vals) else "")
                ax.plot(range(len(vals)), _finite(vals, cap), marker="o", ms=3, label=name,
                        color=_color(report, c["name"]))
            ax.set_title(vid, fontsize=9)
            ax.set_xlabel("frame")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        _legend(fig, axes[0][0])
        out.append(_png(fig))
    return out


def _latent_plot(report: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.2), layout="constrained")
    for c in report["candidates"]:
        labelled = False
        for v in c["videos"]:
            vals = [_num(x) for x in v["latent_rel_err_per_step"]]
            if all(x == 0 for x in vals):
                continue  # identical runs have nothing to draw on a log axis
            ax.plot(range(1, len(vals) + 1), vals, marker="o", ms=3, alpha=0.8, color=_color(report, c["name"]),
                    label=None if labelled else c["name"])
            labelled = True
    ax.set_yscale("log")
    ax.set_xlabel("sampling step")
    ax.set_ylabel("latent relative error")
    ax.grid(alpha=0.3, which="both")
    _legend(fig, ax)
    return _png(fig)


def _flicker_plot(report: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    vid = report["reference"]["videos"][0]
    fig, ax = plt.subplots(figsize=(7.5, 3.2), layout="constrained")
    ax.plot([_num(x) for x in vid["flicker_per_frame"]], "k--", lw=1.5, label="reference", zorder=5)
    for c in report["candidates"]:
        v = c["videos"][0]
        ax.plot([_num(x) for x in v["flicker_per_frame"]], marker="o", ms=3, label=c["name"],
                color=_color(report, c["name"]))
    ax.set_title(f"temporal flicker, {vid['id']}", fontsize=9)
    ax.set_xlabel("frame pair")
    ax.set_ylabel("mean |frame t+1 - frame t|")
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    return _png(fig)


def _weight_plots(report: dict[str, Any]) -> list[str]:
    import matplotlib.pyplot as plt

    cands = [c for c in report["candidates"] if "weight_errors" in c]
    if not cands:
        return []
    out = []
    fig, ax = plt.subplots(figsize=(8.5, 3.4), layout="constrained")
    for c in cands:
        blocks = c["weight_errors"]["by_block"]
        keys = sorted(blocks, key=lambda k: (k.split(".")[0], int(k.split(".")[1])))
        ax.plot(range(len(keys)), [_num(blocks[k]["rel_rmse"]) for k in keys], marker="o", ms=3, label=c["name"],
                color=_color(report, c["name"]))
        ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("weight relative RMSE")
    ax.set_title("by block", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    _legend(fig, ax)
    out.append(_png(fig))
    roles = sorted({r for c in cands for r in c["weight_errors"]["by_role"]})
    fig, ax = plt.subplots(figsize=(9.5, 3.6), layout="constrained")
    width = 0.8 / len(cands)
    for i, c in enumerate(cands):
        by_role = c["weight_errors"]["by_role"]
        # Exact roles (error 0) have no bar on a log axis; the table below lists them.
        vals = [_num(by_role[r]["rel_rmse"]) if r in by_role and _num(by_role[r]["rel_rmse"]) > 0 else float("nan")
                for r in roles]
        ax.bar([j + i * width for j in range(len(roles))], vals, width=width, label=c["name"],
               color=_color(report, c["name"]))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(roles))], roles, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("weight relative RMSE")
    ax.set_title("by role", fontsize=9)
    _legend(fig, ax)
    out.append(_png(fig))
    return out


def _role_table(report: dict[str, Any]) -> str:
    """Weight relative RMSE and storage types by role, one column per candidate."""
    cands = [c for c in report["candidates"] if "weight_errors" in c]
    if not cands:
        return ""
    roles = sorted({r for c in cands for r in c["weight_errors"]["by_role"]})
    rows = [("role", *[c["name"] for c in cands])]
    for r in roles:
        cells = []
        for c in cands:
            e = c["weight_errors"]["by_role"].get(r)
            cells.append("-" if e is None else f"{_num(e['rel_rmse']):.2e} ({'/'.join(e['types'])})")
        rows.append((r, *cells))
    return _table(rows)


def _video(folder: str, rel: str, caption: str, scale: int) -> str:
    path = os.path.join(folder, rel)
    if os.path.getsize(path) <= EMBED_LIMIT:
        with open(path, "rb") as f:
            src = "data:video/mp4;base64," + base64.b64encode(f.read()).decode()
    else:
        src = html.escape(rel)
    return (f'<figure><video src="{src}" controls loop autoplay muted playsinline style="zoom:{scale}"></video>'
            f'<figcaption>{html.escape(caption)} (<a href="{html.escape(rel)}">file</a>)</figcaption></figure>')


def _table(rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict[str, Any], folder: str) -> str:
    """The report page; ``folder`` is where the report's relative video paths point."""
    import matplotlib

    matplotlib.use("Agg")
    s = report["settings"]
    width = max(v["width"] for v in report["reference"]["videos"])
    scale = max(1, min(6, 480 // max(width * 3, 1)))
    rows = summary_rows(report)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>vqtool validation report</title>",
        f"<style>{STYLE}</style></head><body><h1>vqtool validation report</h1>",
        f"<p>{html.escape(s['task'])}: reference <code>{html.escape(s['reference'])}</code>, "
        f"{len(s['prompts'])} prompt(s) x {len(s['seeds'])} seed(s), {s['frames']} frames {s['width']}x{s['height']}, "
        f"{s['steps']} steps, guidance {s['guidance']}, {html.escape(str(s['dtype']))} on {html.escape(s['device'])}. "
        f"Same text embeddings and initial noise for every run: differences come from the weights.</p>",
        "<h2>Summary</h2>", _table(rows),
        "<p>PSNR/SSIM: candidate video vs reference video (mean over videos; <em>inf</em> = identical). "
        "flicker d: change of the mean absolute frame-to-frame difference. latent err: relative L2 error of the "
        "final latents. weight err: relative RMSE over all weights.</p>",
        "<h2>Per frame</h2>", *_per_frame_plots(report),
        "<h2>Sampling and temporal stability</h2>", _latent_plot(report), _flicker_plot(report),
    ]
    weight_plots = _weight_plots(report)
    if weight_plots:
        parts += ["<h2>Weight error</h2>", *weight_plots,
                  "<p>Relative RMSE of the weights by role (storage types in brackets; 0 = stored exactly):</p>",
                  _role_table(report)]
    gain = s.get("diff_gain", 10)
    parts.append(f"<h2>Videos</h2><p>Each comparison: reference | candidate | |difference| x {gain:g}.</p>")
    for ref in report["reference"]["videos"]:
        parts.append(f"<h3>{html.escape(ref['id'])}: {html.escape(ref['prompt'])} (seed {ref['seed']})</h3>"
                     "<div class='videos'>")
        parts.append(_video(folder, ref["path"], "reference", scale))
        for c in report["candidates"]:
            v = next(v for v in c["videos"] if v["id"] == ref["id"])
            parts.append(_video(folder, v["compare_path"], f"{c['name']}: PSNR {v['psnr']} dB, SSIM {v['ssim']}",
                                scale))
        parts.append("</div>")
    import json

    settings = {k: v for k, v in s.items() if k != "prompts"}
    parts += ["<h2>Settings and versions</h2>", f"<pre>{html.escape(json.dumps(settings, indent=1))}</pre>",
              f"<pre>{html.escape(json.dumps(report['versions'], indent=1))}</pre>",
              "<p>Everything above, and per-tensor weight errors, is in <a href='report.json'>report.json</a>.</p>",
              "</body></html>"]
    return "\n".join(parts)


def write_html(report: dict[str, Any], folder: str) -> str:
    """Write ``folder/report.html`` atomically; returns its path."""
    from vqtool.validate.files import write_text

    path = os.path.join(folder, "report.html")
    write_text(path, render_html(report, folder))
    return path
