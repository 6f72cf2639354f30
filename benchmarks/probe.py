"""One fresh serving process: `probe.py emorec|baseline INPUT_DIR REPS` prints a JSON line with
its ready time, import and load times, RSS, whether TensorFlow is loaded, and per-request latencies."""

import time

STARTED = time.time()

import sys  # noqa: E402

backend, folder, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
if backend == "emorec":
    import emorec
    imported = time.perf_counter()
    predictor = emorec.Predictor(threads=1)
else:
    import baseline
    imported = time.perf_counter()
    predictor = baseline.BaselinePredictor(threads=1)
loaded = time.perf_counter()
ready = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from common import percentiles, request_fields, rss_mb  # noqa: E402

report = {"ready_at": ready, "started_at": STARTED, "import_s": imported - start, "load_s": loaded - imported,
          "rss_loaded_mb": rss_mb(), "latency_ms": {}, "cpu_ms": {}}
inputs = {path.name: path.read_bytes() for path in Path(folder).iterdir()}
for kind in ("photo", "crop", "clip5", "clip30"):
    arguments = {name: value == "1" if name == "crops" else value
                 for name, value in request_fields(inputs, kind).items()}
    for _ in range(2):  # warm-up: first calls allocate and trace
        predictor.predict(**arguments)
    durations, cpu = [], []
    for _ in range(reps):
        begin, cpu_begin = time.perf_counter(), time.process_time()
        predictor.predict(**arguments)
        durations.append(time.perf_counter() - begin)
        cpu.append(time.process_time() - cpu_begin)
    report["latency_ms"][kind] = percentiles(durations)
    report["cpu_ms"][kind] = percentiles(cpu)  # CPU time: what other jobs on the machine do not inflate
report.update(rss_after_mb=rss_mb(), rss_peak_mb=rss_mb(field="VmHWM"),
              tensorflow_loaded="tensorflow" in sys.modules)
print(json.dumps(report))
