"""Exports: figures as PNG, SVG and PDF (plotly + kaleido, which drives a Chromium found on the machine), their
data as CSV, and report bundles (zip) with a self-contained HTML page.

Without Chromium, PNG/SVG/PDF raise ExportError saying what is missing and how to install it; CSV and HTML
(interactive plotly, its JavaScript inlined) still work.
"""
from __future__ import annotations

import datetime as dt
import html
import io
import json
import os
import shutil
import tempfile
import threading
import warnings
import zipfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from . import run_figures as figs
from . import run_views
from .runs.store import Store
from .errors import ExportError  # noqa: F401 (re-exported)

IMAGE_FORMATS = ("png", "svg", "pdf")
MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "csv": "text/csv",
        "html": "text/html", "zip": "application/zip"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = ("PNG, SVG and PDF export needs Chromium (plotly's kaleido drives it). Install it, e.g. "
                "'apt-get install chromium' on Debian/Ubuntu, or run 'plotly_get_chrome' once; "
                "CSV and HTML export work without it.")




def find_chromium() -> str | None:
    """The browser kaleido will use: $BROWSER_PATH (kaleido's own setting) or a Chromium/Chrome on the PATH."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit and Path(explicit).exists():
        return explicit
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


_server_lock = threading.Lock()
_server_started = False


def _ensure_server() -> None:
    """Start kaleido's browser once per process: the first image costs seconds, later ones a tenth of one."""
    global _server_started
    with _server_lock:
        if _server_started:
            return
        import kaleido

        kaleido.start_sync_server()
        _server_started = True


def stop_server() -> None:
    """Close kaleido's browser if this process started it (it is otherwise closed at exit)."""
    global _server_started
    with _server_lock:
        if not _server_started:
            return
        import kaleido

        kaleido.stop_sync_server()
        _server_started = False


def warm_up_in_background() -> bool:
    """Start kaleido's browser in a background thread, so the user's first image download is quick.
    Returns False (and does nothing) when there is no Chromium."""
    if find_chromium() is None:
        return False

    def start():
        try:
            _ensure_server()
        except Exception:  # the first real export reports the problem to the user
            pass

    threading.Thread(target=start, daemon=True, name="kaleido-warm-up").start()
    return True


def figure_bytes(fig: go.Figure, fmt: str, size: str = "column", scale: float = 2.0, styled: bool = True) -> bytes:
    """`fig` as PNG, SVG or PDF bytes, in print style at a paper-column, wide or slide size."""
    if fmt not in IMAGE_FORMATS:
        raise ExportError(f"unknown image format {fmt!r}; use one of {', '.join(IMAGE_FORMATS)}")
    if find_chromium() is None:
        raise ExportError(INSTALL_HINT)
    out = figs.print_style(fig, size) if styled else fig
    width, height = figs.SIZES[size]
    try:
        _ensure_server()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pio.to_image(out, format=fmt, width=width, height=height, scale=scale if fmt == "png" else 1)
    except ExportError:
        raise
    except Exception as exc:  # kaleido reports a missing or broken browser in several exception types
        raise ExportError(f"image export failed ({type(exc).__name__}: {exc}). {INSTALL_HINT}") from None


# A cell starting with one of these is a formula to a spreadsheet (CSV injection); such text cells get a leading
# apostrophe, which spreadsheets show as text and hide.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` whose text cells cannot be read as spreadsheet formulas (numbers are left alone)."""
    out = df.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):  # object or string columns (pandas 3 infers str)
            out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v)
    return out


def table_csv(df: pd.DataFrame) -> bytes:
    """A table as CSV whose text cells cannot be read as spreadsheet formulas (every CSV the lab writes)."""
    return csv_safe(df).to_csv(index=False).encode()


def csv_bytes(fig: go.Figure) -> bytes:
    return table_csv(figs.figure_data(fig))


def write_atomically(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file in the same folder, then a rename over `path`, so a
    reader (or an export interrupted half-way) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' identities, outcomes and full configurations, one row per run (for reports)."""
    if runs.empty:
        return runs
    outcome = ["id", "label", "status", "iteration", "total_iterations", "final_train_error", "final_val_error",
               "final_test_error", "params", "device"]
    cfg = pd.DataFrame([r if isinstance(r, dict) else json.loads(r) for r in runs["config"]])
    return pd.concat([runs[[c for c in outcome if c in runs.columns]].reset_index(drop=True),
                      cfg.reset_index(drop=True).drop(columns=[c for c in cfg.columns if c in outcome])], axis=1)


def report_html(title: str, figures: dict[str, go.Figure], runs: pd.DataFrame, images: dict[str, str]) -> str:
    """A self-contained HTML page: interactive figures (plotly.js inlined once), links to the vector/PNG files
    in the bundle, and the runs' configuration table."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:Arial,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}h2{margin-top:2em}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>Generated {dt.datetime.now():%Y-%m-%d %H:%M} by Degradation Lab from "
             f"{len(runs)} stored run(s). Errors in percent.</p>"]
    first = True
    for name, fig in figures.items():
        parts.append(f"<h2>{html.escape(run_views.FIGURES.get(name, (None, name))[1])}</h2>")
        parts.append(pio.to_html(fig, include_plotlyjs="inline" if first else False, full_html=False))
        first = False
        links = [f"<a href='{html.escape(p)}'>{html.escape(p.rsplit('.', 1)[-1].upper())}</a>"
                 for p in sorted(images) if images[p] == name]
        links.append(f"<a href='data/{html.escape(name)}.csv'>CSV</a>")
        parts.append("<p>Files: " + " · ".join(links) + "</p>")
    parts.append("<h2>Runs</h2>")
    # to_html escapes every cell: a tag holding HTML shows as text
    parts.append(runs_table(runs).to_html(index=False, na_rep="", escape=True, float_format=lambda v: f"{v:.4g}"))
    parts.append("</body></html>")
    return "".join(parts)


def report_zip(figures: dict[str, go.Figure], runs: pd.DataFrame, formats=("svg", "pdf", "png"),
               title: str = "Degradation Lab report", size: str = "column") -> tuple[bytes, list[str]]:
    """Bundle figures (vector and PNG), their data (CSV), the runs' configurations and an HTML page into a zip.

    Returns (zip bytes, warnings); when Chromium is missing the image files are left out with a warning and
    everything else is still written."""
    buf, notes, images = io.BytesIO(), [], {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, fig in figures.items():
            z.writestr(f"data/{name}.csv", csv_bytes(fig))
            for fmt in formats:
                if fmt not in IMAGE_FORMATS:
                    continue
                try:
                    z.writestr(f"figures/{name}.{fmt}", figure_bytes(fig, fmt, size))
                    images[f"figures/{name}.{fmt}"] = name
                except ExportError as exc:
                    if str(exc) not in notes:
                        notes.append(str(exc))
        z.writestr("runs.csv", table_csv(runs_table(runs)))
        z.writestr("index.html", report_html(title, figures, runs, images))
        if notes:
            z.writestr("WARNINGS.txt", "\n".join(notes) + "\n")
    return buf.getvalue(), notes


def cli_export(args) -> int:
    """`python -m lab export`: write figures, CSV and (for a .zip --out) a report bundle."""
    names = [n.strip() for n in args.figures.split(",") if n.strip()]
    unknown = [n for n in names if n not in run_views.FIGURES]
    if unknown or not names:
        raise ExportError(f"unknown figure(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(run_views.FIGURES)}")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    allowed = IMAGE_FORMATS + ("csv", "html")
    bad = [f for f in formats if f not in allowed]
    if bad or not formats:
        raise ExportError(f"unknown format(s) {', '.join(map(repr, bad)) or '(none given)'}; use some of {', '.join(allowed)}")
    store = Store(args.results, create=False, readonly=True)
    runs = store.runs()
    if args.runs:
        ids = store.resolve_many(args.runs)
        runs = runs[runs["id"].isin(ids)]
    else:
        runs = runs[runs["status"].isin(["done", "running", "interrupted", "cancelled", "diverged"])]
    if runs.empty:
        raise ExportError("no runs to export (give run ids, or let some runs start first)")
    built = {name: run_views.build(name, store, runs, reference=args.reference) for name in names}
    out = Path(args.out)
    if out.suffix == ".zip":
        data, notes = report_zip(built, runs, formats=[f for f in formats if f in IMAGE_FORMATS])
        write_atomically(out, data)
        print(f"wrote {out} ({len(data) // 1024} KiB): {len(built)} figure(s), {len(runs)} run(s)")
        for n in notes:
            print(f"warning: {n}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, fig in built.items():
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            if fmt == "csv":
                write_atomically(path, csv_bytes(fig))
            elif fmt == "html":
                write_atomically(path, pio.to_html(fig, include_plotlyjs="inline").encode())
            else:
                try:
                    write_atomically(path, figure_bytes(fig, fmt))
                except ExportError as exc:
                    failed.append(str(exc))
                    continue
            print(f"wrote {path}")
    write_atomically(out / "runs.csv", table_csv(runs_table(runs)))
    print(f"wrote {out / 'runs.csv'}")
    if failed:
        print(f"error: {failed[0]}")
        return 1
    return 0
