"""Build ``OUTDIR/report.html`` from what a registration wrote into OUTDIR.

Needs ``result.json`` (keys ``fixed`` and ``moving``: input paths; optionally ``preset``,
``settings``, ``stages``, ``init_matrix``, ``matrix``, ``timings``, ``versions``, ``labels``) and ``warped.nii.gz``
(the moving image on the fixed grid). Sections are added when the optional files exist:
``warp.nii.gz`` (ANTs displacement field: grid lines, Jacobian), ``jacobian.nii.gz``,
``metrics.json`` (from ``torchalign evaluate``) and the label maps named in ``result.json["labels"]``
(``fixed_labels``, ``warped_labels``). Relative input paths are resolved against OUTDIR, then
the working directory.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..functional.jacobian import jacobian_det
from ..image import Image
from ..io.atomic import atomic_path, check_not_input
from ..io.images import read_image
from ..io.transforms import read_displacement
from ..metrics.evaluate import LABEL_METRICS, evaluate
from ..metrics.fields import jacobian_stats
from ..metrics.similarity import mutual_information, ncc
from ..resample import resample
from ..viz import figures
from . import html as h

REPORT_NAME = "report.html"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: not found (is this a registration output folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object at the top level")
    return doc


def _resolve(value: Any, outdir: Path, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"{outdir / 'result.json'}: '{what}' must be a file path, got {value!r}")
    p = Path(value)
    for candidate in ([p] if p.is_absolute() else [outdir / p, Path.cwd() / p]):
        if candidate.exists():
            return candidate.resolve()
    raise InputError(f"{outdir / 'result.json'}: {what} file {value} not found (looked in {outdir} and the "
                     "working directory)")


def _scalar(image: Image) -> Image:
    """Float, single-channel (channels averaged) version of an image."""
    return image.with_data(image.data.float().mean(1, keepdim=True))


def _similarity(fixed: Image, other: Image) -> dict[str, float | None]:
    a, b = figures.volume(fixed), figures.volume(other)
    return {"ncc": ncc(a, b), "mi": mutual_information(a, b)}


def _describe(image: Image) -> list[str]:
    g, d = image.grid, image.data
    return [f"<code>{h.esc(image.meta.get('source', ''))}</code>", h.esc(" × ".join(map(str, g.shape))),
            h.esc(" × ".join(f"{s:.4g}" for s in g.spacing)), h.esc(g.orientation()),
            h.esc(str(d.dtype).replace("torch.", "")),
            h.esc(f"[{float(d.min()):.4g}, {float(d.max()):.4g}]")]


def build_report(outdir: Path, shown_as: str | Path | None = None) -> Path:
    """Write ``outdir/report.html`` (self-contained) from a registration output folder; return its path.

    ``shown_as`` is the folder's name printed in the report (default ``outdir``): the final name of
    a staging folder that is swapped in after the report is built.
    """
    outdir = Path(outdir)
    if not outdir.is_dir():
        raise InputError(f"{outdir}: not a folder")
    doc = _read_json(outdir / "result.json")
    fixed_path = _resolve(doc.get("fixed"), outdir, "fixed")
    moving_path = _resolve(doc.get("moving"), outdir, "moving")
    warped_path = outdir / "warped.nii.gz"
    if not warped_path.is_file():
        raise InputError(f"{warped_path}: not found; the report needs the warped moving image")
    fixed, moving, warped = (_scalar(read_image(p, nan_to=0.0)) for p in (fixed_path, moving_path, warped_path))
    if fixed.ndim != moving.ndim:
        raise InputError(f"{fixed_path} is {fixed.ndim}-D but {moving_path} is {moving.ndim}-D")
    if not warped.grid.same_as(fixed.grid):
        warped = resample(warped, fixed.grid)
    before = resample(moving, fixed.grid)
    metrics_doc = _read_json(outdir / "metrics.json") if (outdir / "metrics.json").is_file() else {}
    sim = {"before": _similarity(fixed, before), "after": _similarity(fixed, warped)}

    sections = [
        _summary(doc, sim, metrics_doc),
        _alignment(fixed, before, warped, sim),
        _inputs(fixed, moving, warped),
    ]
    sections += _optimisation(doc)
    sections += _deformation(outdir, fixed, metrics_doc)
    sections += _labels(outdir, doc, fixed, metrics_doc)
    sections += _settings(doc)

    versions = doc.get("versions") or {}
    footer = ("Generated " + h.esc(_dt.datetime.now().isoformat(timespec="seconds")) + " · "
              + " · ".join(f"{h.esc(k)} {h.esc(v)}" for k, v in versions.items()))
    subtitle = (f"fixed <code>{h.esc(fixed_path.name)}</code> ← moving <code>{h.esc(moving_path.name)}</code>"
                + (f" · preset <code>{h.esc(doc['preset'])}</code>" if doc.get("preset") else "")
                + f" · output <code>{h.esc(Path(shown_as or outdir).resolve())}</code>")
    text = h.page("torchalign registration report", subtitle, sections, footer)
    target = check_not_input(outdir / REPORT_NAME, [fixed_path, moving_path])
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return outdir / REPORT_NAME


# ---- sections --------------------------------------------------------------------------------
def _change(before: float | None, after: float | None) -> str:
    return f"{h.fmt(before, 3)} → {h.fmt(after, 3)}"


def _summary(doc: dict[str, Any], sim: dict[str, dict[str, float | None]],
             metrics_doc: dict[str, Any]) -> h.Section:
    timings = doc.get("timings") or {}
    total = timings.get("total", timings.get("registration", sum(v for v in timings.values()
                                                                 if isinstance(v, (int, float)))))
    cards = [h.card("Registration time", f"{float(total):.1f} s" if timings else "–",
                    ", ".join(f"{h.esc(k)} {float(v):.1f} s" for k, v in timings.items()
                              if isinstance(v, (int, float)))),
             h.card("NCC (fixed vs moving)", _change(sim["before"]["ncc"], sim["after"]["ncc"]), "before → after",
                    _tone_gain(sim["before"]["ncc"], sim["after"]["ncc"])),
             h.card("Mutual information", _change(sim["before"]["mi"], sim["after"]["mi"]), "nats, before → after",
                    _tone_gain(sim["before"]["mi"], sim["after"]["mi"]))]
    mean = metrics_doc.get("mean")
    if mean:
        cards.append(h.card("Mean Dice", h.fmt(mean.get("dice"), 3),
                            f"{mean.get('n', '?')} labels · HD95 {h.fmt(mean.get('hd95'), 3)} mm"))
    points = metrics_doc.get("points")
    if points:
        initial = points.get("initial", {}).get("tre_mean")
        detail = (f"from {h.fmt(initial, 3)} mm · " if initial is not None else "") + f"n = {points.get('n')}"
        cards.append(h.card("Mean TRE", f"{h.fmt(points.get('tre_mean'), 3)} mm", detail))
    jac = metrics_doc.get("jacobian")
    if jac:
        folds = jac.get("fold_percent") or 0.0
        cards.append(h.card("Folded voxels", f"{folds:.3g} %", f"SDlogJ {h.fmt(jac.get('sdlogj'), 3)}",
                            "good" if folds == 0 else "bad"))
    return h.Section("summary", "Summary", f'<div class="cards">{"".join(cards)}</div>')


def _tone_gain(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return ""
    return "good" if after > before else "warn"


def _alignment(fixed: Image, before: Image, warped: Image,
               sim: dict[str, dict[str, float | None]]) -> h.Section:
    over_before = figures.to_png(figures.overlay(fixed, before))
    over_after = figures.to_png(figures.overlay(fixed, warped))
    body = [h.compare(over_before, over_after, "before", "after",
                      "Fixed in magenta, moving in green: aligned structures turn grey. Drag the slider or press "
                      "Flicker to compare the moving image before registration (resampled on the fixed grid "
                      "through the identity, i.e. scanner alignment) with the warped result."),
            "<h3>Checkerboard (after)</h3>",
            h.figure(figures.to_png(figures.checkerboard(fixed, warped)),
                     "Alternating tiles of the fixed and the warped image: edges should continue across tiles."),
            "<h3>Difference</h3>",
            h.figure(figures.to_png(figures.difference(fixed, {"before": before, "after": warped})),
                     "Fixed minus moving after windowing both to [0, 1] (1st–99th percentile), one colour scale."),
            h.table(["", "NCC", "Mutual information (nats)"],
                    [[name, h.fmt(v["ncc"]), h.fmt(v["mi"])] for name, v in sim.items()], [False, True, True])]
    return h.Section("alignment", "Alignment", "".join(body))


def _inputs(fixed: Image, moving: Image, warped: Image) -> h.Section:
    header = ["", "file", "shape", "spacing (mm)", "orientation", "dtype", "range"]
    rows = [["fixed", *_describe(fixed)], ["moving", *_describe(moving)], ["warped", *_describe(warped)]]
    return h.Section("inputs", "Inputs", h.table(header, rows))


def _optimisation(doc: dict[str, Any]) -> list[h.Section]:
    out = []
    stages = [s for s in doc.get("stages") or [] if isinstance(s, dict)]
    if stages:
        body = []
        if any(lv.get("losses") for s in stages for lv in s.get("levels", [])):
            body.append(h.figure(figures.to_png(figures.loss_curves(stages)),
                                 "Loss per iteration; each pyramid level in its own colour (lower is better)."))
        rows = []
        for s in stages:
            for k, lv in enumerate(s.get("levels", [])):
                losses = lv.get("losses") or []
                rows.append([h.esc(s.get("name") or s.get("transform", "")) if k == 0 else "",
                             h.esc(s.get("metric", "")) if k == 0 else "", h.fmt(lv.get("shrink")),
                             h.fmt(lv.get("sigma")), h.fmt(lv.get("iterations", len(losses))),
                             h.fmt(losses[0] if losses else None), h.fmt(losses[-1] if losses else None),
                             h.fmt(lv.get("seconds"), 3)])
        body.append(h.table(["stage", "metric", "shrink", "σ (vox)", "iterations", "first loss", "final loss",
                             "seconds"], rows, [False, False] + [True] * 6))
        out.append(h.Section("optimisation", "Optimisation", "".join(body)))
    timings = {k: float(v) for k, v in (doc.get("timings") or {}).items() if isinstance(v, (int, float))}
    matrices = [(title, doc[key]) for key, title in (("init_matrix", "Initialisation"), ("matrix", "Linear transform"))
                if doc.get(key) is not None]
    if timings or matrices:
        body = []
        if timings:
            longest = max(max(timings.values()), 1e-9)
            body.append("<h3>Timings</h3>" + h.table(
                ["step", "seconds", ""],
                [[h.esc(k), f"{v:.3f}", f'<span class="bar" style="width:{max(2, int(240 * v / longest))}px"></span>']
                 for k, v in timings.items()], [False, True, False]))
        for title, matrix in matrices:
            m = np.asarray(matrix, dtype=np.float64)
            m = m[0] if m.ndim == 3 and m.shape[0] == 1 else m
            if m.ndim == 2:
                body.append(f"<h3>{h.esc(title)} (RAS, fixed → moving world mm)</h3>"
                            + h.table(None, [[f"{x:.5f}" for x in row] for row in m], [True] * m.shape[1]))
        out.append(h.Section("transform", "Transform and timings", "".join(body)))
    return out


def _deformation(outdir: Path, fixed: Image, metrics_doc: dict[str, Any]) -> list[h.Section]:
    warp_path, jac_path = outdir / "warp.nii.gz", outdir / "jacobian.nii.gz"
    if not warp_path.is_file() and not jac_path.is_file():
        return []
    body = []
    if warp_path.is_file():
        field, grid = read_displacement(warp_path)
        background = fixed if fixed.grid.same_as(grid) else resample(fixed, grid)
        body.append("<h3>Deformed grid</h3>" + h.figure(
            figures.to_png(figures.grid_lines(field, grid, background)),
            "Lines of the fixed grid mapped through x → x + u(x) (in-plane components), over the fixed image."))
    if jac_path.is_file():
        jac_image = read_image(jac_path)
        det, grid = jac_image.data[0, 0].double(), jac_image.grid
    else:
        det = jacobian_det(field, grid)[0]
    stats = metrics_doc.get("jacobian") or jacobian_stats(det)
    body.append("<h3>Jacobian determinant</h3>" + h.figure(
        figures.to_png(figures.jacobian_map(det, grid)),
        "det J of x → x + u(x): white = volume preserved, blue = contraction, red = expansion, black = folding."))
    body.append(h.table(["folded (det J ≤ 0)", "SDlogJ", "min", "max", "mean"],
                        [[f"{h.fmt(stats.get('fold_percent'), 3)} %", h.fmt(stats.get("sdlogj")),
                          h.fmt(stats.get("min")), h.fmt(stats.get("max")), h.fmt(stats.get("mean"))]],
                        [True] * 5))
    body.append('<p class="note">SDlogJ: standard deviation of log det J over the voxels with det J &gt; 0.</p>')
    field_stats = metrics_doc.get("field")
    if field_stats:
        body.append(h.table([h.esc(k.replace("_", " ")) for k in field_stats],
                            [[h.fmt(v) for v in field_stats.values()]], [True] * len(field_stats)))
    return [h.Section("deformation", "Deformation", "".join(body))]


def _labels(outdir: Path, doc: dict[str, Any], fixed: Image, metrics_doc: dict[str, Any]) -> list[h.Section]:
    paths = doc.get("labels") if isinstance(doc.get("labels"), dict) else {}
    body = []
    if paths.get("fixed_labels") and paths.get("warped_labels"):
        fl = read_image(_resolve(paths["fixed_labels"], outdir, "fixed_labels"))
        wl = read_image(_resolve(paths["warped_labels"], outdir, "warped_labels"))
        if not metrics_doc.get("labels"):
            metrics_doc = {**metrics_doc, **evaluate(fl, wl, resample_labels=True)}
        if fl.grid.same_as(fixed.grid):
            wl_on_fixed = wl if wl.grid.same_as(fixed.grid) else resample(wl, fixed.grid, interp="nearest")
            body.append(h.figure(figures.to_png(figures.label_contours(fixed, fl, wl_on_fixed)),
                                 "Label boundaries: fixed labels in yellow, warped labels in cyan, white where "
                                 "they coincide."))
    per_label = metrics_doc.get("labels") or {}
    if per_label:
        rows = []
        for label, entry in per_label.items():
            d = entry.get("dice")
            bar = f'<span class="bar" style="width:{int(80 * d)}px"></span>' if d is not None else ""
            status = entry.get("status", "ok")
            rows.append([h.esc(label), *(h.fmt(entry.get(k)) for k in LABEL_METRICS), bar,
                         "" if status == "ok" else f'<span class="status">{h.esc(status)}</span>'])
        mean = metrics_doc.get("mean") or {}
        rows.append([f"mean (n = {h.esc(mean.get('n', '?'))})", *(h.fmt(mean.get(k)) for k in LABEL_METRICS), "",
                     f"{h.esc(mean.get('n_missing', 0))} missing" if mean.get("n_missing") else ""])
        body.append(h.table(["label", "Dice", "Jaccard", "HD (mm)", "HD95 (mm)", "ASSD (mm)", "", "status"],
                            rows, [False] + [True] * 5 + [False, False], total_last=True))
    points = metrics_doc.get("points")
    if points:
        keys = ("tre_mean", "tre_median", "tre_max", "tre_std")
        rows = [["after", *(h.fmt(points.get(k)) for k in keys), h.fmt(points.get("n"))]]
        if points.get("initial"):
            rows.insert(0, ["before", *(h.fmt(points["initial"].get(k)) for k in keys),
                            h.fmt(points["initial"].get("n"))])
        body.append("<h3>Landmarks</h3>" + h.table(["", "TRE mean (mm)", "median", "max", "std", "n"], rows,
                                                    [False] + [True] * 5))
    return [h.Section("evaluation", "Evaluation", "".join(body))] if body else []


def _settings(doc: dict[str, Any]) -> list[h.Section]:
    settings = doc.get("settings")
    if not settings:
        return []
    text = json.dumps(settings, indent=2, default=str)
    return [h.Section("settings", "Settings", f"<pre>{h.esc(text)}</pre>")]
