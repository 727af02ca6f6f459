"""Where a training step's time goes, ours beside the irreducible core (src.bench's variants), by torch.profiler.

    python experiments/probes/step_profile.py preset=ffhq1024 device=cuda precision=bf16 [rows=15]

Prints, per variant: kernels launched per step (CUDA), host ops per step, and the top ops by self time on the
host and on the device. On a GPU a step of batch 2 is launch-bound when host time ~ wall time (bench cpu_ms).
"""

from __future__ import annotations

import sys

from torch.profiler import ProfilerActivity, profile

from src.bench import Bench
from src.bench_options import parse_args
from src.utils.measure import sync


def main(argv: list[str]) -> None:
    rows = 15
    rest = []
    for a in argv:
        if a.startswith("rows="):
            rows = int(a.split("=", 1)[1])
        else:
            rest.append(a)
    opts, overrides = parse_args(rest, __doc__ or "")
    bench = Bench(opts, overrides)
    device = bench.device
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    steps = 3
    for name in ("ours", "core"):
        fn = getattr(bench, name)
        for _ in range(2):  # warm-up (autotuning, caches)
            fn()
        sync(device)
        with profile(activities=acts) as prof:
            for _ in range(steps):
                fn()
            sync(device)
        events = prof.key_averages()
        host_ops = sum(e.count for e in events if e.device_type.name == "CPU" and e.key.startswith("aten::"))
        kernels = sum(e.count for e in prof.events() if e.device_type.name == "CUDA") if len(acts) > 1 else 0
        print(f"== {name}: {host_ops / steps:.0f} aten ops/step, {kernels / steps:.0f} device kernels/step")
        print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))
        if len(acts) > 1:
            print(events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=60))


if __name__ == "__main__":
    main(sys.argv[1:])
