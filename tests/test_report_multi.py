"""The multi-prompt table (src.report_multi) on hand-written eval.json files."""

from __future__ import annotations

import csv
import json

from src.report_multi import column, report


def write_job(root, group, seed, prompts):
    path = root / group / f"seed{seed}" / "eval"
    path.mkdir(parents=True)
    (path / "eval.json").write_text(json.dumps({"prompts": prompts}))


def entry(target, text, seen, faithful, novelty=None):
    m = {
        "target": target,
        "target_text": text,
        "seen": seen,
        "faithful_rate": faithful,
        "collateral_psnr": 30.0,
    }
    m["ceiling"] = {"faithful_rate": 1.0, "collateral_psnr": 40.0}
    if novelty is not None:
        m.update(text_residual=novelty, nearest_trained="face with pink lipstick", nearest_trained_cos=0.49)
    return m


def test_groups_sort_by_variant_then_steps():
    assert sorted(["wide_steps2400", "steps2400", "steps800"], key=column) == [
        "steps800",
        "steps2400",
        "wide_steps2400",
    ]


def test_table_compares_groups_per_prompt_and_custom_runs(tmp_path):
    root = tmp_path / "study"
    green = ("lip_color:green", "face with green lipstick")
    blue = ("lip_color:blue", "face with blue lipstick")
    for seed, f in ((0, 0.4), (1, 0.6)):
        write_job(root, "steps800", seed, {"g": entry(*green, True, f), "b": entry(*blue, False, 0.0)})
    write_job(root, "wide_steps2400", 0, {"g": entry(*green, True, 0.9), "b": entry(*blue, False, 0.2, 0.8)})
    (root / "times.csv").write_text(
        f"{root}/steps800/seed0,500\n{root}/steps800/seed1,700\n{root}/single/seed0,300\n"
    )
    runs = tmp_path / "runs.csv"
    with open(runs, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "job",
                "status",
                "domain.edits.blue_lipstick",
                "prompt",
                "seed",
                "faithful_rate",
                "collateral_psnr",
            ]
        )
        w.writerow(["a", "ok", "-", "green_lipstick", 0, 0.8, 31.0])
        w.writerow(["b", "ok", "[lip_color,blue]", "custom", 0, 0.7, 29.0])
        w.writerow(["c", "failed", "-", "green_lipstick", 1, "", ""])
    text = report(str(root), str(runs), str(tmp_path / "out"))
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| lip_color")}
    assert "| multi 800 steps | multi wide 2400 steps | one mapper per prompt | ceiling |" in text
    assert lines["| lip_color:green"].count("0.50 ± ") == 1  # two seeds: mean and CI
    assert "0.90 (n=1)" in lines["| lip_color:green"] and "0.80 (n=1)" in lines["| lip_color:green"]
    assert "0.70 (n=1) / 29.0 (n=1)" in lines["| lip_color:blue"]  # the custom run, keyed by its edit
    assert "| face with blue lipstick | 0.80 (face with pink lipstick, 0.49) |" in text  # only the wide group
    assert "steps800: 2.00x one single-prompt run" in text
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert {(r["mapper"], r["steps"]) for r in rows} == {
        ("multi", "800"),
        ("multi_wide", "2400"),
        ("per_prompt", "400"),
    }
