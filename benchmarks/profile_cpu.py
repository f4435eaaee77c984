"""The CPU profile of the MNIST autoencoder's SGD, UBP and KFAC steps (batch 200,
float32, real MNIST): `tinynet profile`'s rows (tinynet.profiler) for each,
written as one markdown file with the top kernels and a JSON file with every row.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/profile_cpu.py [--steps 20] [--kfac-steps 100]

KFAC runs 100 profiled steps by default so that its amortized work (statistics
every 10 steps, inverses every T = 100) enters at its real share. Equivalent to
`tinynet profile --model mnist-autoencoder --optimizer O --steps N --out O.json`
for each O.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cli.profile import make_batches  # noqa: E402
from tinynet.models import build_model  # noqa: E402
from tinynet.optim import build_optimizer  # noqa: E402
from tinynet.profiler import cpu_peaks, format_table, profile_steps, to_json  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--kfac-steps", type=int, default=100)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "profile_cpu.md"))
    args = ap.parse_args()
    peaks = cpu_peaks(np.float32)
    results = {}
    for name in ("sgd", "ubp", "kfac"):
        steps = args.kfac_steps if name == "kfac" else args.steps
        net = build_model("mnist-autoencoder", dtype=np.float32, seed=0, device="cpu")
        opt = build_optimizer(name, net, None, defaults={"seed": 0})
        batches = make_batches(net, "mnist-autoencoder", 200, 32, 0)
        r = profile_steps(net, opt, batches, steps=steps, warmup=2, untimed=True, peaks=peaks)
        r.update(model="mnist-autoencoder", optimizer=name, batch=200, lr=opt.lr)
        results[name] = r
        print(format_table(r, top=args.top), flush=True)
    threads = {k: os.environ.get(k, "(unset)") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                         "OPENBLAS_CORETYPE")}
    L = ["# CPU profile: MNIST autoencoder steps, batch 200, float32 (tinynet profile)", "",
         f"Command: `python benchmarks/profile_cpu.py --steps {args.steps} --kfac-steps {args.kfac_steps}` "
         f"(each optimizer as `tinynet profile --model mnist-autoencoder --optimizer O --steps N`); "
         + ", ".join(f"{k}={v}" for k, v in threads.items())
         + f"; {results['sgd']['device_name']}. Per step: the mean over the profiled steps "
           f"(after 2 warm-up steps); `(uncovered)` is the step time no kernel covers (Python, "
           f"allocations, host work outside kernels, the timing itself). GFLOP/s and GB/s are "
           f"achieved rates; % peak is against the GEMM rate and the copy bandwidth measured at "
           f"start-up ({peaks['flops'] / 1e9:.1f} GFLOP/s, {peaks['bytes'] / 1e9:.1f} GB/s: {peaks['source']}); "
           f"kernels whose data sit in cache can exceed the copy bandwidth. The machine is shared "
           f"(2 cores): absolute times vary by 20% or more between runs.", ""]
    for name, r in results.items():
        L += [f"## {name}" + (f" (KFAC defaults: statistics every 10 steps, inverses every T = 100; "
                              f"{r['steps']} profiled steps)" if name == "kfac" else ""), "",
              format_table(r, top=args.top, markdown=True), ""]
    sgd = results["sgd"]["step_ms"]
    L += ["Steps as multiples of the SGD step (profiled): "
          + ", ".join(f"{n} {r['step_ms'] / sgd:.2f}x" for n, r in results.items()) + ".", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(L))
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        f.write("{" + ",\n".join(f'"{n}": {to_json(r)}' for n, r in results.items()) + "}\n")
    json.load(open(os.path.splitext(args.out)[0] + ".json"))      # well-formed
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
