"""Wall time of every command in the README's tour (issue 13, part 7), each run
as a user would from a checkout: in a scratch folder beside the checkout's
`../shared` (the tour's relative data paths), one after another, with a time
limit per command. Writes a table of command, exit status and seconds.

    python benchmarks/tour_times.py [--limit 150] [--out benchmarks/results/tour_times.md]

A command that reaches the limit is stopped (SIGTERM, as a user's Ctrl-C would:
tinynet writes its checkpoint) and reported as "stopped at the limit".
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tour_commands(readme):
    """The commands of the first ```bash block after '## A tour', continuation lines joined."""
    text = open(readme).read()
    block = re.search(r"## A tour\s*```bash\n(.*?)```", text, re.S).group(1)
    cmds, cur = [], ""
    for line in block.splitlines():
        cur += line.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur.strip():
            cmds.append(re.sub(r"\s+#.*$", "", cur).strip())
        cur = ""
    return cmds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=float, default=150.0)
    ap.add_argument("--scratch", default=os.path.join(os.path.dirname(ROOT), "tour_scratch"))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "tour_times.md"))
    ap.add_argument("--note", default="", help="a line on the conditions (other load on the machine)")
    a = ap.parse_args()
    shutil.rmtree(a.scratch, ignore_errors=True)
    os.makedirs(a.scratch)
    tinynet = shutil.which("tinynet") or f"{sys.executable} -m cli.main"
    rows = []
    for cmd in tour_commands(os.path.join(ROOT, "README.md")):
        line = cmd if shutil.which("tinynet") else cmd.replace("tinynet ", tinynet + " ", 1)
        t0 = time.perf_counter()
        p = subprocess.Popen(["bash", "-c", line], cwd=a.scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True, env=dict(os.environ, PYTHONPATH=ROOT))
        try:
            out, _ = p.communicate(timeout=a.limit)
            status = str(p.returncode)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGTERM)
            out, _ = p.communicate()
            status = "stopped at the limit"
        dt = time.perf_counter() - t0
        last = [l for l in out.replace("\r", "\n").splitlines() if l.strip()][-1:] or [""]
        rows.append((cmd, status, dt, last[0][:160]))
        print(f"{dt:7.1f} s  {status:>20}  {cmd}", flush=True)
    lines = ["# The README tour, timed (issue 13, part 7)", "",
             f"`python benchmarks/tour_times.py --limit {a.limit:g}`: each command in order, from a scratch "
             f"folder beside the checkout, {os.cpu_count()} cores; OPENBLAS_NUM_THREADS="
             f"{os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}, NUMBA_NUM_THREADS="
             f"{os.environ.get('NUMBA_NUM_THREADS', '(unset)')}. {a.note}".rstrip(), "",
             "| command | exit | seconds | last line |", "|---|---|---|---|"]
    for cmd, status, dt, last in rows:
        lines.append(f"| `{cmd}` | {status} | {dt:.1f} | {last.replace('|', '/')} |")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
