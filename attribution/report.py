"""The look of a labels run: two plots and a self-contained HTML viewer.

- ``cumulative.png``: cumulative share of normalised strength with segments sorted by strength (the
  paper's Fig. 1, bottom right), one faint line per trace, the mean in bold, tau dashed.
- ``strength_consistency.png``: normalised strength vs consistency per segment, selected or not,
  with beta dashed.
- ``viewer.html``: each trace with its segments outlined (green: trained, grey: masked) and token
  IG as a heat map (red positive, blue negative); hovering shows the scores.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np


def plot_cumulative(rows: list[dict], path: Path, tau: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    grid = np.linspace(0, 1, 101)
    curves = []
    for r in rows:
        s = np.sort(np.asarray(r["norm_strength"]))[::-1]
        if s.sum() <= 0:
            continue
        x = np.arange(1, len(s) + 1) / len(s)
        cum = np.cumsum(s)
        ax.plot(np.r_[0, x], np.r_[0, cum], color="tab:blue", alpha=0.08, lw=0.8)
        curves.append(np.interp(grid, np.r_[0, x], np.r_[0, cum]))
    if curves:
        ax.plot(grid, np.mean(curves, 0), color="tab:blue", lw=2.2, label=f"mean of {len(curves)} traces")
    ax.axhline(tau, ls="--", color="tab:red", lw=1, label=f"tau = {tau}")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="uniform")
    ax.set(xlabel="fraction of segments (sorted by strength)", ylabel="cumulative normalised strength", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_strength_consistency(rows: list[dict], path: Path, beta: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    def flat(key, dtype=float):
        return np.concatenate([np.asarray(r[key], dtype=dtype) for r in rows]) if rows else np.zeros(0, dtype)

    ns, cons, sel = flat("norm_strength"), flat("consistency"), flat("selected", bool)
    # first and last segments are kept whatever their scores: plotted apart so the thresholds read clearly
    end = np.concatenate([np.isin(np.arange(len(r["selected"])), [0, len(r["selected"]) - 1]) for r in rows]) if rows \
        else np.zeros(0, bool)
    ax.scatter(ns[~sel], cons[~sel], s=9, color="grey", alpha=0.5, label="masked")
    ax.scatter(ns[sel & ~end], cons[sel & ~end], s=9, color="tab:green", alpha=0.7, label="selected")
    ax.scatter(ns[end], cons[end], s=14, marker="x", color="tab:green", alpha=0.6, label="kept: first / last")
    ax.axhline(beta, ls="--", color="tab:red", lw=1, label=f"beta = {beta}")
    ax.set(xlabel="normalised strength (eq. 4)", ylabel="consistency (eq. 3)", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _heat(v: float, vmax: float) -> str:
    a = min(abs(v) / vmax, 1.0) * 0.75 if vmax > 0 else 0.0
    return f"rgba(220,40,40,{a:.3f})" if v > 0 else f"rgba(40,90,220,{a:.3f})"


def render_trace(trace: str, row: dict, attribution: dict | None, kinds: list[str] | None = None) -> str:
    """HTML of one trace: every character once, in segment spans, token pieces coloured by IG.
    ``kinds``: ground-truth segment kinds (synthetic data), shown as a badge on planted segments."""
    starts, igs = np.zeros(0, dtype=np.int64), np.zeros(0)
    if attribution is not None and attribution.get("token_ig"):
        seg = np.asarray(attribution["token_segment"])
        inside = seg >= 0
        starts = np.asarray(attribution["token_start"])[inside] - attribution["trace_start"]
        igs = np.asarray(attribution["token_ig"])[inside]
    vmax = float(np.abs(igs).max()) if len(igs) else 0.0
    ig_at = {}  # first character -> IG of the token starting there (the first one, if two share it)
    for start, v in zip(starts.tolist(), igs.tolist()):
        ig_at.setdefault(start, v)
    parts = []
    for k, (a, b) in enumerate(row["segment_char_spans"]):
        cls = "seg sel" if row["selected"][k] else "seg"
        tip = (f"segment {k} | {'trained' if row['selected'][k] else 'masked'} | strength {row['strength'][k]:.4g} | "
               f"norm {row['norm_strength'][k]:.3f} | consistency {row['consistency'][k]:.3f}")
        kind = kinds[k] if kinds and k < len(kinds) else None
        if kind and kind != "genuine":
            tip += f" | planted: {kind}"
        cuts = [a] + [int(s) for s in starts if a < s < b] + [b]
        pieces = []
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            text = html.escape(trace[lo:hi])
            if lo in ig_at:
                v = ig_at[lo]
                pieces.append(f'<span class="tok" style="background:{_heat(v, vmax)}" title="IG {v:.4g}">{text}</span>')
            else:
                pieces.append(text)
        badge = f'<sup class="kind">{kind}</sup>' if kind and kind != "genuine" else ""
        parts.append(f'<span class="{cls}" data-seg="{k}" title="{html.escape(tip)}">{"".join(pieces)}</span>{badge}')
    return "".join(parts)


STYLE = """body{font:14px/1.5 system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
.rec{border-top:1px solid #ccc;padding:1em 0}.q{color:#555}.trace{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12.5px}
.seg{border:1px dashed #bbb;border-radius:3px;opacity:.55}.seg.sel{border:1.5px solid #2a2;opacity:1}
.legend span{margin-right:1.2em}.kind{color:#a50;font:bold 10px system-ui;margin-left:2px}"""


def write_viewer(records: dict, rows: list[dict], attributions: dict | None, path: Path, title: str) -> Path:
    body = [f"<h1>{html.escape(title)}</h1>",
            '<p class="legend"><span style="border:1.5px solid #2a2">trained segment</span>'
            '<span style="border:1px dashed #bbb;opacity:.55">masked segment</span>'
            f'<span style="background:{_heat(1, 1)}">IG &gt; 0</span><span style="background:{_heat(-1, 1)}">IG &lt; 0</span>'
            " hover a segment or token for its scores</p>"]
    for row in rows:
        rec = records[row["id"]]
        attr = (attributions or {}).get(row["id"])
        kinds = [m["kind"] for m in rec.meta.get("segments", [])] or None
        n_sel = int(sum(row["selected"]))
        body.append(f'<div class="rec"><h3>{html.escape(row["id"])}: {n_sel} of {len(row["selected"])} segments trained</h3>'
                    f'<p class="q">{html.escape(rec.question)} <b>answer: {html.escape(str(rec.answer))}</b></p>'
                    f'<div class="trace">{render_trace(rec.trace, row, attr, kinds)}</div></div>')
    path.write_text(f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{STYLE}</style>"
                    + "\n".join(body), encoding="utf-8")
    return path


def write_report(cfg, attribution_dir: str | Path | None, records: list | None = None, limit: int = 50) -> Path:
    """Plots and the viewer of the labels in ``cfg.labels_dir`` (a SelectionArguments), under its ``report/``."""
    from .attributions import finished, load_attributions
    from .labels_dataset import load_labels

    labels_dir = Path(cfg.labels_dir)
    out = labels_dir / "report"
    out.mkdir(exist_ok=True)
    rows = list(load_labels(labels_dir))
    plot_cumulative(rows, out / "cumulative.png", cfg.tau)
    plot_strength_consistency(rows, out / "strength_consistency.png", cfg.beta)
    if records is not None:
        attributions = load_attributions(attribution_dir) if finished(attribution_dir) else None
        write_viewer({r.id: r for r in records}, rows[:limit], attributions, out / "viewer.html",
                     f"{labels_dir.name}: {cfg.selector}")
    return out
