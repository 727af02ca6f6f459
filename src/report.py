"""Gather sweeps into tables and plots: ``python -m src.report multirun/<time> [more dirs] [--out DIR]``.

Every job dir below the given dirs (one with ``.hydra/overrides.yaml``) is read: ``eval/eval.json`` (the final
evaluation), ``error.json`` (a failed job) and its configuration (``.hydra/hydra.yaml`` group choices and the
overrides). A configuration is what varies between jobs, prompt and seed aside. Per configuration x prompt:
mean and 95% confidence interval (Student t) over seeds; per configuration: the same over seeds of the
prompt-averaged metric. When the sweep varies the paper's ablation axes (loss / aug / model around the full
method clip_nce / perspective / cfclip), each paper claim is checked by paired differences over (prompt, seed).

Writes into ``--out`` (default ``<first dir>/report``): ``results.md``, ``results.csv`` (aggregates),
``runs.csv`` (one row per job, failed ones with their error) and ``plots/*.png``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from src.report_jobs import REFERENCE, gather
from src.utils.stats import mean_ci

# the headline first, each ideal-edit metric beside its ceiling (the world's inversion of the ideal edit)
MAIN_METRICS = (
    "faithful_rate",
    "ceiling/faithful_rate",
    "region_fidelity_min",
    "ceiling/region_fidelity_min",
    "nearest_target_rate",
    "ceiling/nearest_target_rate",
    "collateral_psnr",
    "ceiling/collateral_psnr",
    "psnr_to_ideal",
    "ceiling/psnr_to_ideal",
    "edit_accuracy",
    "preservation",
    "leakage",
    "realism/valid_rate",
    "clip_score",
    "clip_directional",
    "pixel_l1_change",
)
# the paper's claims as (axis, ablated option, claim)
CLAIMS = (
    ("loss", "directional", "CLIP-NCE beats the directional CLIP loss (StyleGAN-NADA)"),
    ("loss", "global", "CLIP-NCE beats the global CLIP loss (StyleCLIP)"),
    ("aug", "none", "augmented views beat one unaugmented view"),
    ("aug", "affine", "perspective views beat affine views"),
    ("aug", "crop", "perspective views beat random crops"),
    ("model", "no_tem", "TEM (text-conditioned mapper) beats the plain mapper"),
    ("identity", "off", "the identity term (paper: ArcFace, weight 0.2) helps"),
)


# ---- statistics -------------------------------------------------------------------------------------------
def aggregate(jobs: list[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Rows (config, prompt, n, <m>_mean, <m>_ci95, ...) per configuration x prompt, and per configuration
    (prompt "all": each seed's metric averaged over prompts, then mean/CI over seeds)."""
    ok = [j for j in jobs if j["status"] == "ok"]
    rows = []

    def row(config: str, prompt: str, groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
        r: dict[str, Any] = {"config": config, "prompt": prompt, "n": len(groups)}
        for m in metrics:
            r[f"{m}_mean"], r[f"{m}_ci95"], _ = mean_ci(
                mean_ci(j["metrics"].get(m) for j in g)[0] for g in groups
            )
        return r

    for config in dict.fromkeys(j["config"] for j in ok):
        mine = [j for j in ok if j["config"] == config]
        for prompt in dict.fromkeys(j["prompt"] for j in mine):
            rows.append(row(config, prompt, [[j] for j in mine if j["prompt"] == prompt]))
        by_seed = defaultdict(list)
        for j in mine:
            by_seed[j["seed"]].append(j)
        rows.append(row(config, "all", list(by_seed.values())))
    return rows


def verdict(diff: float, ci: float) -> str:
    """holds: the CI of (full - ablated) lies above 0; contradicted: below 0; else not significant."""
    if math.isnan(ci):
        return "no CI (one pair)"
    return "holds" if diff - ci > 0 else "contradicted" if diff + ci < 0 else "not significant"


def check_claims(
    jobs: list[dict[str, Any]], varying: list[str], metric: str, second: str | None
) -> list[dict]:
    """Paired differences (full method - ablated) over the (prompt, seed) both finished, per paper claim."""
    ok = [j for j in jobs if j["status"] == "ok" and metric in j["metrics"]]
    ref = {a: REFERENCE[a] for a in REFERENCE if a in varying}
    out = []
    for axis, option, claim in CLAIMS:
        if axis not in ref:
            continue
        pick = lambda want: {  # noqa: E731
            (j["prompt"], j["seed"]): j["metrics"]
            for j in ok
            if all(j["settings"][a] == v for a, v in want.items())
        }
        a, b = pick(ref), pick({**ref, axis: option})
        pairs = sorted(set(a) & set(b), key=str)
        if not pairs:
            continue
        d, ci, n = mean_ci(a[p][metric] - b[p][metric] for p in pairs)
        c = {
            "claim": claim,
            "axis": axis,
            "ablated": option,
            "n": n,
            "diff": d,
            "ci95": ci,
            "verdict": verdict(d, ci),
        }
        if second:
            c["diff2"] = mean_ci(a[p].get(second, math.nan) - b[p].get(second, math.nan) for p in pairs)[0]
        out.append(c)
    return out


# ---- output -----------------------------------------------------------------------------------------------
def fmt(mean: float, ci: float) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if math.isnan(ci) else f"{mean:.3f} ± {ci:.3f}"


def md_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in body] + [""]


def markdown(res: dict[str, Any], metrics: Sequence[str], claim_metrics: tuple[str, str | None]) -> str:
    jobs, rows = res["jobs"], res["rows"]
    status = ", ".join(f"{n} {s}" for s, n in Counter(j["status"] for j in jobs).items())
    lines = [
        "# Sweep results",
        "",
        f"Source: {', '.join(res['sources'])}. Jobs: {len(jobs)} ({status}). "
        f"Configuration axes: {', '.join(res['varying']) or 'none'}. "
        "Cells: mean ± 95% CI over seeds (Student t).",
        "",
    ]

    def cells(r: dict[str, Any]) -> list[Any]:
        return [r["config"], r["prompt"], r["n"]] + [fmt(r[f"{m}_mean"], r[f"{m}_ci95"]) for m in metrics]

    header = ["configuration", "prompt", "n", *metrics]
    lines += [
        "## Per configuration and prompt",
        "",
        *md_table(header, [cells(r) for r in rows if r["prompt"] != "all"]),
    ]
    if len({r["prompt"] for r in rows}) > 2:
        all_rows = [cells(r) for r in rows if r["prompt"] == "all"]
        lines += ["## Per configuration (prompts averaged within each seed)", "", *md_table(header, all_rows)]
    if res["claims"]:
        m1, m2 = claim_metrics
        lines += ["## Paper claims", "", f"Full method minus ablation, paired over (prompt, seed), on {m1}"
                  + (f" (and the mean Δ of {m2})" if m2 else "") + ".", ""]  # fmt: skip
        tail = [f"Δ {m1}"] + ([f"Δ {m2}"] if m2 else []) + ["verdict"]

        def claim_rows(claims: list[dict], *lead: str) -> list[list[Any]]:
            return [[c["claim"], *lead, c["n"], fmt(c["diff"], c["ci95"])] + ([f"{c['diff2']:+.3f}"] if m2 else [])
                    + [c["verdict"]] for c in claims]  # fmt: skip

        lines += md_table(["claim", "pairs", *tail], claim_rows(res["claims"]))
        per = [row for p, cs in (res.get("claims_by_prompt") or {}).items() for row in claim_rows(cs, p)]
        if per:
            lines += ["### Per prompt", "", "The same, paired over seeds within each prompt.", ""]
            lines += md_table(["claim", "prompt", "pairs", *tail], per)
    bad = [[j["job"], j["config"], j["prompt"], j["seed"], j["error"]] for j in jobs if j["status"] != "ok"]
    if bad:
        lines += [
            "## Failed or incomplete runs",
            "",
            *md_table(["job", "configuration", "prompt", "seed", "error"], bad),
        ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], metrics: Sequence[str], out_dir: str) -> list[str]:
    """A bar chart per metric (configurations x prompts, 95% CI error bars) and the accuracy/preservation
    trade-off per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    configs = list(dict.fromkeys(r["config"] for r in rows))
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    prompts = [p for p in prompts if p != "all"] if len(prompts) == 2 else prompts
    get = {(r["config"], r["prompt"]): r for r in rows}
    val = lambda c, p, key: get.get((c, p), {}).get(key, math.nan)  # noqa: E731
    nan0 = lambda x: 0.0 if math.isnan(x) else x  # noqa: E731
    paths = []
    for m in metrics:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(configs) + 2), 3.6))
        width = 0.8 / len(prompts)
        for i, p in enumerate(prompts):
            xs = [k + i * width for k in range(len(configs))]
            errs = [nan0(val(c, p, f"{m}_ci95")) for c in configs]
            ax.bar(xs, [val(c, p, f"{m}_mean") for c in configs], width, yerr=errs, capsize=2, label=p)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(configs))])
        ax.set_xticklabels([c.replace(" ", "\n") for c in configs], fontsize=7)
        ax.set_ylabel(m)
        ax.legend(fontsize=7, ncol=min(4, len(prompts)))
        paths.append(os.path.join(out_dir, m.replace("/", "_") + ".png"))
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if {"edit_accuracy", "preservation"} <= set(metrics):
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for c in configs:
            ax.errorbar(val(c, "all", "preservation_mean"), val(c, "all", "edit_accuracy_mean"),
                        xerr=nan0(val(c, "all", "preservation_ci95")), yerr=nan0(val(c, "all", "edit_accuracy_ci95")),
                        fmt="o", capsize=2, label=c)  # fmt: skip
        ax.set(xlabel="preservation (oracle)", ylabel="edit accuracy (oracle)", title="all prompts, 95% CI")
        ax.legend(fontsize=6)
        paths.append(os.path.join(out_dir, "tradeoff.png"))
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


def report(roots: Sequence[str], out: str | None = None, metrics: Sequence[str] | None = None,
           claim_metric: str = "faithful_rate", second_metric: str = "collateral_psnr") -> dict[str, Any]:  # fmt: skip
    """Gather ``roots`` and write the report into ``out``; returns jobs, rows, claims, markdown and paths."""
    jobs, varying = gather(roots)
    if not jobs:
        raise FileNotFoundError(f"no job dirs (with .hydra/overrides.yaml) under {', '.join(roots)}")
    out = out or os.path.join(roots[0], "report")
    os.makedirs(out, exist_ok=True)
    present = {k for j in jobs for k in j["metrics"]}
    shown = [m for m in (metrics or MAIN_METRICS) if m in present]
    if (
        claim_metric not in present and "edit_accuracy" in present
    ):  # sweeps evaluated before the faithful rate
        claim_metric = "edit_accuracy"
    second = second_metric if second_metric in present else None
    res: dict[str, Any] = {"jobs": jobs, "varying": varying, "sources": list(roots), "out": out}
    res["rows"] = aggregate(jobs, shown + sorted(present - set(shown)))
    res["claims"] = check_claims(jobs, varying, claim_metric, second)
    prompts = sorted({j["prompt"] for j in jobs}, key=str)
    res["claims_by_prompt"] = (  # a pooled test can hide an effect that only some prompts can show
        {
            p: check_claims([j for j in jobs if j["prompt"] == p], varying, claim_metric, second)
            for p in prompts
        }
        if len(prompts) > 1
        else {}
    )
    res["markdown"] = markdown(res, shown, (claim_metric, second))
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write(res["markdown"] + "\n")
    write_csv(os.path.join(out, "results.csv"), res["rows"])
    write_csv(os.path.join(out, "runs.csv"), [
        {"job": j["job"], "status": j["status"], **{k: j["settings"][k] for k in varying}, "prompt": j["prompt"],
         "seed": j["seed"], **j["metrics"], "error": j["error"]} for j in jobs])  # fmt: skip
    res["plots"] = plot(res["rows"], shown, os.path.join(out, "plots")) if shown and res["rows"] else []
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", help="multirun dir(s): every job dir below them is read")
    parser.add_argument("--out", help="output dir (default: <first dir>/report)")
    parser.add_argument("--metrics", help="comma-separated eval metrics for the tables and plots")
    parser.add_argument("--claim-metric", default="faithful_rate", help="metric of the paper-claim checks")
    args = parser.parse_args(argv)
    try:
        res = report(
            args.dirs, args.out, args.metrics.split(",") if args.metrics else None, args.claim_metric
        )
    except FileNotFoundError as err:
        print(f"cfclip report: error: {err}", file=sys.stderr)
        return 2
    print(res["markdown"])
    print(f"written: {res['out']}/results.md, results.csv, runs.csv and {len(res['plots'])} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
