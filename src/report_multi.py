"""The multi-prompt table: ``python -m src.report_multi <root> --per-prompt runs.csv --out DIR``.

Reads the multi-prompt jobs below ``root`` (``[<variant>_]steps<N>/seed<S>/eval/eval.json``, written by
``experiments/toyfaces_multi.sh``) and the per-prompt runs' ``runs.csv`` of ``src.report``; writes
``results.md`` and ``results.csv``: per prompt (seen / held-out / composed) the faithful edit rate and the
collateral change of one mapper for all prompts beside one mapper per prompt, mean ± 95% CI over seeds, with the
ceiling, and the wall times (``times.csv``) of one multi-prompt run against one single-prompt run.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
from collections import defaultdict
from typing import Any

import yaml

from src.toyworld.attributes import values_in_text
from src.utils.stats import mean_ci

CONF_EDITS = os.path.join(os.path.dirname(__file__), "..", "conf", "domain", "toyfaces.yaml")
METRICS = ("faithful_rate", "collateral_psnr")


def target_of(name: str, edits: dict[str, list[str]]) -> str:
    """'attribute:value' of a per-prompt run: the domain's edits, else the values its name names."""
    if name in edits:
        return ":".join(edits[name])
    return " + ".join(f"{a}:{v}" for a, v in values_in_text(name.replace("_", " ")))


def column(group: str) -> tuple[str, int]:
    """'steps800' -> ('', 800); 'wide_steps2400' -> ('wide', 2400): the sort key of a job group."""
    variant, _, steps = group.rpartition("steps")
    return variant.rstrip("_"), int(steps)


def multi_jobs(root: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{group: {target: {"kind", "text", metric: [per seed], "ceiling/<metric>": [...]}}}, groups such as
    'steps800' (experiment=toyfaces_multi) or 'wide_steps2400' (experiment=toyfaces_multi_wide)."""
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(root, "*steps*", "seed*", "eval", "eval.json"))):
        steps = os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(path))))
        if not re.fullmatch(r"(\w+_)?steps\d+", steps):
            continue
        with open(path) as fh:
            result = json.load(fh)
        for m in result.get("prompts", {}).values():
            kind = "seen" if m["seen"] else "composed" if "+" in m["target"] else "held-out"
            row = out[steps].setdefault(m["target"], {"kind": kind, "text": m["target_text"]})
            for k in METRICS:
                row.setdefault(k, []).append(m.get(k))
                row.setdefault(f"ceiling/{k}", []).append((m.get("ceiling") or {}).get(k))
            if "text_residual" in m:  # the same for every seed: the CLIP and the trained texts are fixed
                row["novelty"] = (m["text_residual"], m["nearest_trained"], m["nearest_trained_cos"])
    return out


def novelty_table(multi: dict[str, dict[str, dict[str, Any]]], groups: list[str]) -> list[str]:
    """Per text not trained: the norm of its unit CLIP embedding outside the span of the trained texts' (the
    TEM's input space) and the nearest trained text, for every group whose evaluation recorded it."""
    have = [g for g in groups if any("novelty" in r for r in multi[g].values())]
    rows = {t: r for g in have for t, r in multi[g].items() if r["kind"] != "seen"}
    if not have or not rows:
        return []
    lines = ["", "How far each untrained text lies from the trained ones (residual outside their span, 0-1; nearest "
             "trained text, cosine):", "", "| text | " + " | ".join(have) + " |", "|" + "---|" * (len(have) + 1)]  # fmt: skip
    for t, r in rows.items():
        cells = []
        for g in have:
            n = multi[g].get(t, {}).get("novelty")
            cells.append(f"{n[0]:.2f} ({n[1]}, {n[2]:.2f})" if n else "-")
        lines.append(f"| {r['text']} | " + " | ".join(cells) + " |")
    return lines


def per_prompt_runs(path: str, edits: dict[str, list[str]]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(path) as fh:
        for r in csv.DictReader(fh):
            if r["status"] == "ok":
                # a custom prompt is judged through its +domain.edits.<name>=[attribute,value] override
                custom = [v for k, v in r.items() if k.startswith("domain.edits.") and v not in ("", "-")]
                target = (
                    ":".join(custom[0].strip("[]").split(",")) if custom else target_of(r["prompt"], edits)
                )
                for k in METRICS:
                    out[target][k].append(float(r[k]) if r.get(k) else None)
    return out


def cell(values: list | None, digits: int = 2) -> str:
    m, ci, n = mean_ci(values or [])
    if n == 0:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {ci:.{digits}f}" if n > 1 else "") + (f" (n={n})" if n < 3 else "")


def wall_times(root: str) -> dict[str, float]:
    times: dict[str, list[float]] = defaultdict(list)
    path = os.path.join(root, "times.csv")
    if os.path.isfile(path):
        with open(path) as fh:
            for line in fh:
                job, _, seconds = line.strip().rpartition(",")
                times[os.path.basename(os.path.dirname(job))].append(float(seconds))
    return {k: sum(v) / len(v) for k, v in times.items()}


def report(root: str, per_prompt: str, out: str) -> str:
    with open(CONF_EDITS) as fh:
        edits = yaml.safe_load(fh)["edits"]
    multi, single = multi_jobs(root), per_prompt_runs(per_prompt, edits)
    steps = sorted(multi, key=column)
    targets = list(dict.fromkeys(t for s in steps for t in multi[s]))
    head = (
        ["target", "text", "kind"]
        + [" ".join(["multi", column(s)[0], f"{column(s)[1]} steps"]).replace("  ", " ") for s in steps]
        + ["one mapper per prompt", "ceiling"]
    )
    lines = [
        f"# One mapper for many prompts ({root})",
        "",
        "Faithful edit rate / collateral change outside the edited region (dB), mean ± 95% CI over seeds "
        "(64 test faces each). One mapper per prompt: 400 steps on that very text (experiments/results/"
        "toyfaces_prompts; on a held-out row, what the method reaches when it does train on the text).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    rows = []
    for t in targets:
        first = next(multi[s][t] for s in steps if t in multi[s])
        cells = [f"{cell(multi[s].get(t, {}).get('faithful_rate'))} / {cell(multi[s].get(t, {}).get('collateral_psnr'), 1)}" for s in steps]  # fmt: skip
        ref = single.get(t, {})
        base = f"{cell(ref.get('faithful_rate'))} / {cell(ref.get('collateral_psnr'), 1)}" if ref else "-"
        top = f"{cell(first['ceiling/faithful_rate'])} / {cell(first['ceiling/collateral_psnr'], 1)}"
        lines.append("| " + " | ".join([t, first["text"], first["kind"], *cells, base, top]) + " |")
        rows.append({"target": t, "kind": first["kind"], "text": first["text"]})
    lines += novelty_table(multi, steps)
    times = wall_times(root)
    if times:
        lines += ["", "Wall time per run (s, as recorded in times.csv; a job that shared the cores with another ran slower): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in sorted(times.items()))]  # fmt: skip
        if "single" in times:
            lines += [f"- {k}: {v / times['single']:.2f}x one single-prompt run" for k, v in sorted(times.items())
                      if k != "single"]  # fmt: skip
    text = "\n".join(lines) + "\n"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out, "results.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["target", "kind", "mapper", "steps", "metric", "mean", "ci95", "n"])
        for t in targets:
            for s in steps:
                for k in (*METRICS, *(f"ceiling/{m}" for m in METRICS)):
                    w.writerow([t, multi[s].get(t, {}).get("kind"), "_".join(filter(None, ("multi", column(s)[0]))), column(s)[1], k, *mean_ci(multi[s].get(t, {}).get(k, []))])  # fmt: skip
            for k in METRICS:
                w.writerow([t, "", "per_prompt", 400, k, *mean_ci(single.get(t, {}).get(k, []))])
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the multirun dir of experiments/toyfaces_multi.sh")
    parser.add_argument("--per-prompt", required=True, help="runs.csv of the one-mapper-per-prompt runs")
    parser.add_argument("--out", default=None, help="output dir (default: <root>/report)")
    args = parser.parse_args(argv)
    print(report(args.root, args.per_prompt, args.out or os.path.join(args.root, "report")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
