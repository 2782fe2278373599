"""numpy reference of fedssl's FedAvg fold (bench/aggregation.ts).

Reads the same synthetic deltas the bench sealed into update envelopes, as plaintext:
DIR/update-<k>.f32 (raw little-endian float32, the model's tensors concatenated in model
order) and DIR/weights.json (the example counts, in site order). Computes the
example-weighted average the way coordinator/src/strategies/fedavg.ts does: weights
normalized up front, a float64 running sum, one update at a time (np.fromfile, then an
in-place multiply-add), rounded to float32 at the end. The global model is zero in the
bench, so the new weights are the mean delta itself.

Timed: reading the files and the arithmetic. Not timed: interpreter start, numpy import.
There is no decryption, signature or hash check, decoding or validation here, all of which
fedssl's figure includes.

  /usr/bin/python3 bench/reference/weighted_average.py DIR UPDATES [--out FILE]

Prints one JSON line: seconds (wall), cpuSeconds, params, baselineKb (resident before the
loop), peakKb (VmHWM of /proc/self/status: the process's own peak; ru_maxrss would start at
the spawning node process's RSS, which Linux carries over fork and exec).
With --out, writes the float32 result to FILE (outside the timing) for a bitwise comparison.
"""

import json
import os
import resource
import sys
import time

import numpy as np


def rss_kb(field: str) -> int:
    """VmRSS or VmHWM of this process (Linux); ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status", encoding="utf8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    directory, updates = sys.argv[1], int(sys.argv[2])
    out = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
    with open(os.path.join(directory, "weights.json"), encoding="utf8") as f:
        counts = json.load(f)[:updates]
    total = float(sum(counts))
    files = [os.path.join(directory, f"update-{k}.f32") for k in range(updates)]
    params = os.path.getsize(files[0]) // 4
    baseline_kb = rss_kb("VmRSS")

    t0, c0 = time.perf_counter(), time.process_time()
    acc = np.zeros(params, dtype=np.float64)
    # One float64 scratch array reused: w * x in float64 without a new array per update.
    # dtype=float64 makes the product itself float64 (numpy would otherwise multiply a
    # float32 array by a scalar in float32), as in fedssl's fold.
    scaled = np.empty(params, dtype=np.float64)
    for k, path in enumerate(files):
        x = np.fromfile(path, dtype="<f4")
        np.multiply(x, counts[k] / total, out=scaled, dtype=np.float64)
        acc += scaled
        del x
    result = acc.astype(np.float32)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0

    peak_kb = rss_kb("VmHWM")
    if out is not None:
        result.tofile(out)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpuSeconds": cpu,
                "params": params,
                "baselineKb": baseline_kb,
                "peakKb": peak_kb,
            }
        )
    )


if __name__ == "__main__":
    main()
