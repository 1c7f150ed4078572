"""Tables for people, and the report's blocks rendered to Markdown and to self-contained HTML.

Column headers are the metric names themselves (one name per idea), so the extractor
id is in every sample-quality header and two extractors never share a column.
A configuration's cell reads `mean ± T (t95, n=k), SE s` (interval_cell): ± T is the
half-width of the 95% t-interval of the mean across its k seeds (analysis/intervals.py),
SE the bootstrap standard error of that mean from the finite sample count alone
(tables.pooled_se); one seed: `value, SE s`. A single trial's cell reads `value ± SE`.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import pandas as pd

from analysis.conventions import FINISHED_STATES, SAMPLER_LABELS, sample_metric_name, standard_error_name

MISSING = "–"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: str       # relative to the report
    caption: str


Block = Union[tuple[str, str], Table, Image]  # ("h1" | "h2" | "h3" | "p", text), a table, an image


def fmt(value, digits: int = 4) -> str:
    if value is None or value is pd.NA:
        return MISSING
    if isinstance(value, float) and math.isnan(value):
        return MISSING
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return f"{value:.{digits}g}"
    return str(value)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def mean_std(mean, std, prefix: str = "", se=None) -> str:
    """`12 ± 0.86 (sd 2.8)`: the value, its standard error (if given), the std over repeats (if any)."""
    if _missing(mean):
        return MISSING
    text = f"{prefix}{fmt(mean)}"
    if not _missing(se):
        text += f" ± {fmt(se, 2)}"
    if not _missing(std):
        text += f" (sd {fmt(std, 2)})"
    return text


def interval_cell(mean, t95, n, se=None, prefix: str = "") -> str:
    """`12 ± 25 (t95, n=2), SE 0.86`: the mean over seeds, the half-width of its 95% t-interval across the n
    seeds (where n >= 2), and the bootstrap standard error of the mean (where given); `16, SE 1.6` for one seed."""
    if _missing(mean):
        return MISSING
    text = f"{prefix}{fmt(mean)}"
    if not _missing(t95):
        text += f" ± {fmt(t95, 2)} (t95, n={int(n)})"
    if not _missing(se):
        text += f", SE {fmt(se, 2)}"
    return text


def state_mark(state: str) -> str:
    """Completed trials plain; every other state in bold so it cannot be missed."""
    return state if state in FINISHED_STATES else f"**{state}**"


# ---------------------------------------------------------------- views of the tables

def trials_view(trials: pd.DataFrame, extractor: Optional[str]) -> Table:
    distance = sample_metric_name("distance", extractor) if extractor else None
    score = sample_metric_name("score", extractor) if extractor else None
    header = ["run", "trial_id", "state", "status", "epochs", "noise_std", "num_mixtures", "seed", "train_subset",
              "bpd_bound", *(f"{c} (± SE)" for c in (distance, score) if c), "samples", "last update (UTC)", "note"]
    rows = []
    for _, t in trials.iterrows():
        note = "; ".join(x for x in (str(t["error"]) if t.get("error") else "",
                                     f"{t['num_failures']} retries" if t.get("num_failures") else "") if x)
        epochs = f"{t['epochs']}/{t['max_epochs']}" if "max_epochs" in t else str(t["epochs"])
        updated = t["last_update"].strftime("%Y-%m-%d %H:%M") if pd.notna(t.get("last_update")) else MISSING
        rows.append([str(t["run_name"]), str(t["trial_id"]), state_mark(t["state"]), str(t["status"]), epochs,
                     fmt(t.get("noise_std")), fmt(t.get("num_mixtures")), fmt(t.get("seed")),
                     "all" if t.get("train_subset") == 0 else fmt(t.get("train_subset")), fmt(t.get("bpd_bound")),
                     *(mean_std(t.get(c), None, se=t.get(standard_error_name(c))) for c in (distance, score) if c),
                     fmt(t.get("num_eval_samples")), updated, note])
    return Table(header, rows)


def trend_view(table: pd.DataFrame, metrics: Sequence[str]) -> Table:
    """A trend table (tables.trend_table) as interval cells, `n` and what was not included."""
    metrics = [m for m in metrics if (m, "mean") in table.columns and table[(m, "n")].sum() > 0]
    keys = list(table.index.names)
    header = [*keys, "n", *metrics, "not included"]
    rows = []
    for index, row in table.iterrows():
        index = index if isinstance(index, tuple) else (index,)
        cells = [fmt(v) for v in index] + [str(row[("trials", "n")])]
        cells += [interval_cell(row[(m, "mean")], row.get((m, "t95")), row[(m, "n")], se=row.get((m, "se")))
                  for m in metrics]
        rows.append(cells + [row[("trials", "not_included")] or ""])
    return Table(header, rows)


def paper_view(table: pd.DataFrame, extractor_ids: Sequence[str]) -> Table:
    """Model | sampler | n | samples | is_E ↑ | fd_E ↓ (per extractor) | bits/dim ↓ (≤: the two-step bound), as
    interval cells: ± t95 across seeds, SE bootstrap."""
    header = ["model", "sampler", "n", "samples"]
    for e in extractor_ids:
        header += [f"{sample_metric_name('score', e)} ↑ (± t95 seeds; SE bootstrap)",
                   f"{sample_metric_name('distance', e)} ↓ (± t95 seeds; SE bootstrap)"]
    header += ["bits/dim ↓", "not included"]
    rows = []
    for _, r in table.iterrows():
        cells = [str(r["model"]), SAMPLER_LABELS.get(r["sampler"], r["sampler"]), str(r["n"]), str(r.get("samples", "?"))]
        for e in extractor_ids:
            for family in ("score", "distance"):
                name = sample_metric_name(family, e)
                cells.append(interval_cell(r.get(name), r.get(f"{name}:t95"), r["n"], se=r.get(f"{name}:se")))
        prefix = "≤ " if r["bpd_metric"] == "bpd_bound" else ""
        cells.append(interval_cell(r["bpd"], r.get("bpd:t95"), r["n"], prefix=prefix))
        cells.append(r["not_included"] or "")
        rows.append(cells)
    return Table(header, rows)


def _shares(row) -> str:
    """'69% / 8% / 23%' of an evaluation's time; blank for studies that did not log the split."""
    values = [row.get(k) for k in ("eval_share_sampling", "eval_share_bpd", "eval_share_features")]
    if any(v is None or v != v for v in values):
        return ""
    return " / ".join(f"{100 * v:.0f}%" for v in values)


def time_view(table: pd.DataFrame) -> Table:
    keys = [k for k in ("dataset", "kind", "nr_filters", "nr_resnet", "batch_size", "mixed_precision", "compile")
            if k in table.columns]
    header = [*keys, "trials", "epochs", "evaluations",
              "training h / 100 epochs", "images/s", "generation h / 2000 images",
              "evaluation: sampling / bits/dim / features", "hardware"]
    rows = []
    for _, r in table.iterrows():
        rows.append([fmt(r[k]) for k in keys] + [str(r["trials"]), str(r["epochs"]), str(r["evaluations"]),
                     mean_std(r["train_hours_per_100_epochs"], r["train_hours_per_100_epochs:std"]),
                     fmt(r["images_per_s"]),
                     mean_std(r["gen_hours_per_2000_images"], r["gen_hours_per_2000_images:std"]),
                     _shares(r), str(r["hardware"])])
    return Table(header, rows)


# ---------------------------------------------------------------- Markdown and HTML

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    if not table.rows:
        return "_(no rows yet)_"
    lines = ["| " + " | ".join(_md_cell(h) for h in table.header) + " |",
             "|" + "|".join("---" for _ in table.header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def to_markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Table):
            parts.append(markdown_table(block))
        elif isinstance(block, Image):
            parts.append(f"![{block.caption}]({block.path})\n\n_{block.caption}_")
        else:
            kind, text = block
            parts.append({"h1": "# ", "h2": "## ", "h3": "### "}.get(kind, "") + text)
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """The little Markdown the report uses inside text: **bold** and `code`."""
    out, bold, code = [], False, False
    for i, piece in enumerate(html.escape(text).replace("**", "\0").split("\0")):
        if i:
            bold = not bold
            out.append("<b>" if bold else "</b>")
        segments = piece.split("`")
        for j, segment in enumerate(segments):
            if j:
                code = not code
                out.append("<code>" if code else "</code>")
            out.append(segment)
    return "".join(out)


def to_html(blocks: list[Block], root: Path, title: str) -> str:
    """One HTML file with the PNGs embedded (base64): opens anywhere, also in MLflow's artifact view."""
    body = []
    for block in blocks:
        if isinstance(block, Table):
            if not block.rows:
                body.append("<p><i>(no rows yet)</i></p>")
                continue
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode((root / block.path).read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                        f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
        else:
            kind, text = block
            tag = kind if kind in ("h1", "h2", "h3") else "p"
            body.append(f"<{tag}>{_inline(text)}</{tag}>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px}"
             "th{background:#f3f3f3}img{max-width:100%}figcaption{font-style:italic;color:#555}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
