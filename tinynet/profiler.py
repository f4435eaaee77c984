"""Per-kernel profile of optimizer steps over the backend's timing hook
(tinynet/backend_base.py: `Backend._run`, `host_call`), for `tinynet profile`
and the benchmark scripts.

    result = profile_steps(net, opt, batches, steps=20)
    print(format_table(result))
    json.dump(result, f)                   # the fixed JSON form below

The JSON form (checks outside the project read it):
    {"device": "cpu" | "cuda", "step_ms": mean profiled step in ms,
     "kernels": [{"name", "calls", "total_ms", "mean_us", "share", "gflops" or "gbps",
                  ...}, ...]}
with the rows sorted by time, most first, and the step time no kernel covers
(Python overhead, host work outside kernels, allocations, and the timing
itself) as the row named "(uncovered)", so that the rows' total_ms add up to
step_ms. Per row: `calls` and `total_ms` are per step (means over the
profiled steps: an amortized kernel run once in 100 steps has calls 0.01),
`mean_us` is per call, `share` = total_ms / step_ms; "gflops" (rows with a
FLOP count) or "gbps" (rows with only a byte count; null when neither is
known) is the achieved rate, and `peak_fraction` that rate over the device's
peak (`peaks`): on the CPU the GEMM rate and the copy bandwidth measured at
start-up, on the GPU the spec sheet. Other keys: `total_calls` (over all
profiled steps), `device_name`, `steps`, `step_ms_untimed` (the same number
of steps with timing off, measured just before), `peak`, and the run's
settings.

Timing: with a profile attached every kernel is bracketed by the device's
clock (CPU: the monotonic perf_counter, kernels being synchronous; CUDA:
events, synchronized after each kernel, so a profiled GPU step runs without
overlap of host and device and is slower than an untimed one; the ratio is
the `step_ms / step_ms_untimed` shown under the table). Every step is
bracketed by `bk.synchronize()`.
"""
import csv
import io
import json
import os
import time

import numpy as np

from tinynet.backend_base import Profile

UNCOVERED = "(uncovered)"

# spec-sheet peaks (non-tensor-core FMA rate, HBM bandwidth) by device-name
# fragment, first match wins: (float32 FLOP/s, float64 FLOP/s, bytes/s)
GPU_PEAKS = [
    ("H200", 67e12, 34e12, 4.8e12),
    ("H100 PCIe", 51e12, 26e12, 2.0e12),
    ("H100", 67e12, 34e12, 3.35e12),
    ("A100", 19.5e12, 9.7e12, 2.0e12),
    ("L40S", 91.6e12, 1.4e12, 0.864e12),
    ("A10", 31.2e12, 0.98e12, 0.6e12),
    ("V100", 15.7e12, 7.8e12, 0.9e12),
]


# -- peaks -------------------------------------------------------------------------------
def cpu_peaks(dtype=np.float32, n=1024, repeats=3, copy_mb=64):
    """Measured on this machine now, in the current thread settings: the best
    of `repeats` numpy GEMMs n x n x n in `dtype` (FLOP/s) and the best of
    `repeats` copies of a `copy_mb` MB array (bytes read + written per second).
    About 0.1-0.3 s."""
    rng = np.random.default_rng(0)
    A = rng.random((n, n)).astype(dtype)
    B = rng.random((n, n)).astype(dtype)
    C = np.empty((n, n), dtype=dtype)
    np.dot(A, B, out=C)                   # warm-up: thread pool, pages
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.dot(A, B, out=C)
        best = min(best, time.perf_counter() - t0)
    src = np.ones(copy_mb * 2 ** 20 // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    bbest = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        bbest = min(bbest, time.perf_counter() - t0)
    return dict(flops=2.0 * n ** 3 / best, bytes=2.0 * src.nbytes / bbest,
                source=f"measured: numpy GEMM {n}^3 {np.dtype(dtype).name}, copy {copy_mb} MB")


def gpu_peaks(device_name, dtype=np.float32):
    """Spec-sheet peaks of the named GPU (None entries when it is not in GPU_PEAKS)."""
    for frag, f32, f64, bw in GPU_PEAKS:
        if frag.lower() in device_name.lower():
            return dict(flops=f32 if np.dtype(dtype) == np.float32 else f64, bytes=bw,
                        source=f"spec sheet: {frag} {np.dtype(dtype).name} non-tensor FMA, HBM")
    return dict(flops=None, bytes=None, source=f"unknown GPU {device_name!r}: no spec-sheet peak")


def device_name(bk):
    if bk.name == "cuda":
        from numba import config, cuda
        if config.ENABLE_CUDASIM:
            return "CUDA simulator"
        name = cuda.get_current_device().name
        return name.decode() if isinstance(name, bytes) else str(name)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    import platform
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


# -- measuring ---------------------------------------------------------------------------
def _timed_steps(opt, batches, steps, start):
    bk = opt.bk
    out = []
    for s in range(steps):
        X, Y = batches[(start + s) % len(batches)]
        bk.synchronize()
        t0 = time.perf_counter()
        opt.step(X, Y)
        bk.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def profile_steps(net, opt, batches, steps=20, warmup=2, untimed=True, trace=False, peaks=None):
    """Profile `steps` optimizer steps of `opt` (on `net`) over `batches`, a
    list of (X, Y) already on the net's device (cycled). First `warmup`
    untimed steps (JIT compilation, first factorizations), then, when
    `untimed`, `steps` steps with timing off (the reference step time), then
    `steps` profiled ones; with `trace`, one more profiled step whose kernel
    events become result["trace"] (chrome_trace). peaks: dict(flops, bytes,
    source) of the device; default cpu_peaks / gpu_peaks. Returns the JSON
    form of the module docstring (plus "trace" when asked)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not batches:
        raise ValueError("profile_steps needs at least one batch")
    bk = net.bk
    name = device_name(bk)
    if peaks is None:
        peaks = gpu_peaks(name, net.dtype) if bk.name == "cuda" else cpu_peaks(net.dtype)
    old = bk.profile
    bk.profile = None
    try:
        pos = 0
        _timed_steps(opt, batches, warmup, pos)
        pos += warmup
        off = _timed_steps(opt, batches, steps, pos) if untimed else None
        pos += steps if untimed else 0
        prof = Profile()
        bk.profile = prof
        walls = _timed_steps(opt, batches, steps, pos)
        pos += steps
        events = None
        if trace:
            prof_t = Profile()
            prof_t.events = []
            bk.profile = prof_t
            X, Y = batches[pos % len(batches)]
            bk.synchronize()
            t0 = time.perf_counter()
            opt.step(X, Y)
            bk.synchronize()
            events = (t0, time.perf_counter() - t0, prof_t.events)
    finally:
        bk.profile = old
    step_s = float(np.mean(walls))
    rows = []
    covered = 0.0
    for r in prof.rows():
        per_step = r["total_s"] / steps
        covered += per_step
        row = dict(name=r["kernel"], calls=_per_step(r["calls"], steps), total_ms=per_step * 1e3,
                   mean_us=r["mean_s"] * 1e6, share=per_step / step_s, total_calls=r["calls"])
        rows.append(_rate(row, r, peaks))
    unc = step_s - covered
    rows.append(dict(name=UNCOVERED, calls=1, total_ms=unc * 1e3, mean_us=unc * 1e6, share=unc / step_s,
                     gflops=None, peak_fraction=None, total_calls=steps))
    rows.sort(key=lambda r: r["total_ms"], reverse=True)
    result = dict(device=bk.name, device_name=name, step_ms=step_s * 1e3,
                  step_ms_untimed=float(np.mean(off)) * 1e3 if off else None,
                  step_ms_median=float(np.median(walls)) * 1e3, steps=int(steps), warmup=int(warmup),
                  dtype=np.dtype(net.dtype).name,
                  peak=dict(gflops=None if peaks.get("flops") is None else peaks["flops"] / 1e9,
                            gbps=None if peaks.get("bytes") is None else peaks["bytes"] / 1e9,
                            source=peaks.get("source")),
                  kernels=rows)
    if events is not None:
        result["trace"] = chrome_trace(*events, device=name)
    return result


def _per_step(calls, steps):
    c = calls / steps
    return int(c) if c == int(c) else round(c, 4)


def _rate(row, r, peaks):
    if r["flops"] > 0:
        row["gflops"] = r["gflops"]
        pk = peaks.get("flops")
        row["peak_fraction"] = r["gflops"] * 1e9 / pk if pk else None
    elif r["nbytes"] > 0:
        row["gbps"] = r["gbytes"]
        pk = peaks.get("bytes")
        row["peak_fraction"] = r["gbytes"] * 1e9 / pk if pk else None
    else:
        row["gflops"] = None          # no work count known for this kernel
        row["peak_fraction"] = None
    return row


def chrome_trace(t0, seconds, events, device=""):
    """Chrome-trace JSON object (Perfetto, chrome://tracing) of one step: a
    complete event ("ph": "X") for the step and one per timed kernel, nested
    under it on one track; times in microseconds from the step's start."""
    us = 1e6
    ev = [dict(name="process_name", ph="M", pid=0, tid=0, args=dict(name=f"tinynet {device}")),
          dict(name="step", cat="step", ph="X", ts=0.0, dur=seconds * us, pid=0, tid=0)]
    for name, start, dur, flops, nbytes in events:
        args = {}
        if flops:
            args["gflop"] = flops / 1e9
        if nbytes:
            args["mbytes"] = nbytes / 1e6
        ev.append(dict(name=name, cat="host" if name.startswith("host.") else "kernel", ph="X",
                       ts=(start - t0) * us, dur=dur * us, pid=0, tid=0, args=args))
    return {"traceEvents": ev, "displayTimeUnit": "ms"}


# -- output ----------------------------------------------------------------------------------
JSON_KEYS = ("device", "device_name", "model", "optimizer", "batch", "dtype", "steps", "warmup",
             "step_ms", "step_ms_untimed", "step_ms_median", "peak", "kernels")


def to_json(result):
    """The JSON text (without the trace)."""
    out = {k: result[k] for k in JSON_KEYS if k in result}
    out.update({k: v for k, v in result.items() if k not in out and k != "trace"})
    return json.dumps(out, indent=1)


CSV_COLUMNS = ["name", "calls", "total_ms", "mean_us", "share", "gflops", "gbps", "peak_fraction", "total_calls"]


def to_csv(result):
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result["kernels"]:
        w.writerow({k: ("" if r.get(k) is None else r.get(k, "")) for k in CSV_COLUMNS})
    return buf.getvalue()


def _num(v, fmt):
    return "-" if v is None else format(v, fmt)


def format_table(result, top=None, markdown=False):
    """The table of torch.profiler's key_averages().table() kind, most time first."""
    rows = result["kernels"] if top is None else result["kernels"][:top]
    head = ["Name", "Calls/step", "Total ms/step", "Mean us", "% step", "GFLOP/s", "GB/s", "% peak"]
    body = []
    for r in rows:
        body.append([r["name"], _num(r["calls"], "g"), f"{r['total_ms']:.3f}", f"{r['mean_us']:.1f}",
                     f"{100 * r['share']:.1f}%", _num(r.get("gflops"), ".1f"), _num(r.get("gbps"), ".1f"),
                     "-" if r.get("peak_fraction") is None else f"{100 * r['peak_fraction']:.0f}%"])
    if top is not None and len(result["kernels"]) > top:
        rest = result["kernels"][top:]
        body.append([f"({len(rest)} more)", "", f"{sum(r['total_ms'] for r in rest):.3f}", "",
                     f"{100 * sum(r['share'] for r in rest):.1f}%", "", "", ""])
    title = (f"{result.get('model', '?')} / {result.get('optimizer', '?')} on {result['device']} "
             f"({result.get('device_name', '')}), {result['dtype']}, batch {result.get('batch', '?')}: "
             f"mean of {result['steps']} profiled steps after {result['warmup']} warm-up")
    foot = [f"Step: {result['step_ms']:.3f} ms profiled (median {result['step_ms_median']:.3f})"
            + (f", {result['step_ms_untimed']:.3f} ms with timing off "
               f"(x{result['step_ms'] / result['step_ms_untimed']:.3f})" if result.get("step_ms_untimed") else "")
            + ".",
            f"Peak: {_num(result['peak']['gflops'], '.1f')} GFLOP/s, {_num(result['peak']['gbps'], '.1f')} GB/s "
            f"({result['peak']['source']})."]
    if markdown:
        lines = [title, "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for b in body:
            name = b[0] if b[0].startswith("(") else f"`{b[0]}`"
            lines.append("| " + " | ".join([name] + b[1:]) + " |")
        return "\n".join(lines + [""] + foot) + "\n"
    widths = [max(len(head[j]), *(len(b[j]) for b in body)) for j in range(len(head))]
    sep = "-" * (sum(widths) + 2 * (len(widths) - 1))

    def line(cells):
        return "  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(cells))
    return "\n".join([title, sep, line(head), sep] + [line(b) for b in body] + [sep] + foot) + "\n"
