"""bench/pipeline.py's per-task memory probe, loaded by every Python process of a measured run
(bench/pipeline.py puts this folder on PYTHONPATH). With CONVEYOR_BENCH_TASK_RSS set, each
process appends one JSON line at exit to that file: the KFP function it executed (kfp's
executor_main `--function_to_execute`), its own peak RSS (VmHWM) and its wall seconds."""

import os

if os.environ.get("CONVEYOR_BENCH_TASK_RSS"):
    import atexit
    import json
    import sys
    import time

    _start = time.monotonic()

    def _record() -> None:
        argv = sys.argv
        task = (argv[argv.index("--function_to_execute") + 1]
                if "--function_to_execute" in argv[:-1] else os.path.basename(argv[0] or "-c"))
        peak = 0
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak = round(int(line.split()[1]) / 1024)
        with open(os.environ["CONVEYOR_BENCH_TASK_RSS"], "a") as out:
            out.write(json.dumps({"task": task, "pid": os.getpid(), "peak_rss_mb": peak,
                                  "wall_s": round(time.monotonic() - _start, 2)}) + "\n")

    atexit.register(_record)
