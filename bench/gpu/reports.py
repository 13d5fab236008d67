#!/usr/bin/env python3
"""Small checks on `virnucpro --report` files and run outputs, for bench/gpu/kit.sh. Each prints
one line (the detail of a PASS/FAIL line) and exits 1 when the check fails.

  reports.py dtype REPORT.json PRECISION [DEVICE]
      the report's `precision` is the one asked, its `devices` name DEVICE (default cuda: no
      silent fall-back to the CPU), and, when the report has `dtype_read_back` (the dtypes of
      a weight and an activation read back from the device), both equal PRECISION.
  reports.py scores GOT.txt WANT.txt
      the largest difference of the score columns of two prediction_results.txt (same rows).
  reports.py oom REPORT.json LOG
      the OOM probe: the log has "retrying it as two halves" and the report no failed sequence.
  reports.py collect OUT.json DIR...
      every *.json of the DIRs into one file {"DIR/NAME": report}.
"""
import glob
import json
import os
import sys


def dtype(path, asked, device="cuda"):
    r = json.load(open(path))
    problems = []
    got = r.get("precision")
    if got != asked:
        problems.append(f"precision {got!r}, asked {asked!r}")
    if device not in str(r.get("devices", "")):
        problems.append(f"devices {r.get('devices')!r}, not {device}")
    back = r.get("dtype_read_back")
    if back is None:
        read = "no dtype_read_back in this build's report"
    else:
        read = ", ".join(f"{k} {v}" for k, v in sorted(back.items()))
        wrong = {k: v for k, v in back.items() if v != asked}
        if wrong:
            problems.append(f"read back {wrong} instead of {asked}")
        read = "read back " + read
    line = f"precision {got} on {r.get('devices')}; {read}"
    if problems:
        print(line + " -> " + "; ".join(problems))
        return 1
    print(line)
    return 0


def scores(got_path, want_path):
    def table(p):
        rows = {}
        for line in open(p).read().splitlines()[1:]:
            f = line.split("\t")
            if len(f) >= 4:
                rows[f[0]] = (f[1], float(f[2]), float(f[3]))
        return rows
    got, want = table(got_path), table(want_path)
    if set(got) != set(want):
        print(f"rows differ: {len(got)} vs {len(want)}")
        return 1
    diff = max((max(abs(got[k][1] - want[k][1]), abs(got[k][2] - want[k][2])) for k in got),
               default=0.0)
    labels = sum(got[k][0] != want[k][0] for k in got)
    print(f"{len(got)} rows, {labels} labels differ, scores within {diff:.2g}")
    return 0 if labels == 0 else 1


def oom(report_path, log_path):
    log = open(log_path, errors="replace").read()
    splits = log.count("retrying it as two halves")
    if not os.path.exists(report_path):
        print(f"no report: the process did not finish ({splits} split lines logged)")
        return 1
    r = json.load(open(report_path))
    line = (f"{splits} 'retrying it as two halves' lines, {r['sequences']} sequences embedded, "
            f"{r['failed']} failed, {r['batches']} planned batches of budget {r['batch_tokens']}")
    if splits == 0 or r["failed"]:
        print(line + " -> expected a split and no failed sequence")
        return 1
    print(line)
    return 0


def collect(out, dirs):
    doc = {}
    for d in dirs:
        for p in sorted(glob.glob(os.path.join(d, "*.json"))):
            try:
                doc[os.path.join(os.path.basename(d), os.path.basename(p))] = json.load(open(p))
            except (OSError, ValueError) as e:
                doc[p] = {"unreadable": str(e)}
    json.dump(doc, open(out, "w"), indent=1)
    print(f"{len(doc)} reports in {out}")
    return 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "collect":
        sys.exit(collect(args[0], args[1:]))
    sys.exit({"dtype": dtype, "scores": scores, "oom": oom}[cmd](*args))
