#!/usr/bin/env python3
"""report.py turns bench.sh's results into one table: printed as text, and written as markdown
with the machine description for docs/PERFORMANCE.md.

Usage: report.py RESULTS.tsv MACHINE.txt OUT.md [SUBJECT TARGETS BASES]

SUBJECT, TARGETS and BASES default to bench.sh's table: kmipfs; plain,loopback,gocryptfs,kmipfs;
gocryptfs:gc,plain:plain,loopback:lo. bench/s3.sh passes its own (kmipfs-s3 against rclone-crypt):
SUBJECT is the target the ratios are of, TARGETS the value columns in order, BASES the targets it is
compared with, each as TARGET:SHORT (SHORT is the name used in GOAL). A table whose rows have no GOAL
gets no goal column.

RESULTS.tsv has two kinds of tab-separated lines, written by bench.sh:
  row KEY LABEL UNIT BETTER GOAL   one table row; BETTER is "high" or "low"
  val KEY TARGET VALUE             a measurement; VALUE is a number or "fail"
Ratios are oriented so that above 1 kmipfs is better: kmipfs/base for throughput, base/kmipfs for
times and memory. GOAL is what issue 5 asks of the row ("lo>=1 gc>=1.5", "gc>=1", "max=300", "-").
"""

import sys

SUBJECT = "kmipfs"
TARGETS = ["plain", "loopback", "gocryptfs", "kmipfs"]
BASES = [("gocryptfs", "gc"), ("plain", "plain"), ("loopback", "lo")]


def num(v):
    if v is None:
        return "—"
    if v == "fail":
        return "fail"
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def ratio(row, base):
    k, b = row["vals"].get(SUBJECT), row["vals"].get(base)
    if not isinstance(k, float) or not isinstance(b, float) or k <= 0 or b <= 0:
        return None
    return k / b if row["better"] == "high" else b / k


def goal(row):
    """Returns "met", "missed", or "" when the row has no goal or lacks the numbers."""
    if row["goal"] and row["vals"].get(SUBJECT) == "fail":
        return "missed"
    checks = []
    for g in row["goal"].split():
        if g.startswith("max="):
            k = row["vals"].get(SUBJECT)
            if not isinstance(k, float):
                return ""
            checks.append(k <= float(g[4:]))
            continue
        short, want = g.split(">=")
        base = {s: t for t, s in BASES}[short]
        r = ratio(row, base)
        if r is None:
            return ""
        checks.append(r >= float(want))
    if not checks:
        return ""
    return "met" if all(checks) else "missed"


def load(path):
    rows, order = {}, []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "row":
                key, label, unit, better, g = parts[1:6]
                rows[key] = {"label": label, "unit": unit, "better": better,
                             "goal": "" if g == "-" else g, "vals": {}}
                order.append(key)
            elif parts[0] == "val":
                key, target, value = parts[1:4]
                rows[key]["vals"][target] = value if value == "fail" else float(value)
    return [rows[k] for k in order]


def table(rows):
    goals = any(r["goal"] for r in rows)
    head = ["workload", "unit"] + TARGETS + [SUBJECT + "/" + b for b, _ in BASES] + (["goal"] if goals else [])
    body = []
    for r in rows:
        cells = [r["label"], r["unit"] + (" ↑" if r["better"] == "high" else " ↓")]
        cells += [num(r["vals"].get(t)) for t in TARGETS]
        for b, _ in BASES:
            x = ratio(r, b)
            cells.append("—" if x is None else "%.2fx" % x)
        if goals:
            g = goal(r)
            cells.append(g + (" (" + r["goal"] + ")" if g else ""))
        body.append(cells)
    return head, body, goals


def main():
    global SUBJECT, TARGETS, BASES
    res, machine, out = sys.argv[1:4]
    if len(sys.argv) > 4:
        SUBJECT = sys.argv[4]
        TARGETS = sys.argv[5].split(",")
        BASES = [tuple(b.split(":", 1)) for b in sys.argv[6].split(",")]
    head, body, goals = table(load(res))
    with open(machine) as f:
        mach = [l.rstrip("\n") for l in f if l.strip()]

    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    fmt = lambda cells: "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print()
    print(fmt(head))
    for cells in body:
        print(fmt(cells))
    print("(↑ higher is better, ↓ lower is better; ratios above 1.00x: %s is better%s" %
          (SUBJECT, ";" if goals else ")"))
    if goals:
        print(" goal: what issue 5 asks, lo = vs loopback, gc = vs gocryptfs, max = kmipfs's own value)")

    with open(out, "w") as f:
        f.write("<!-- written by bench/bench.sh; paste into docs/PERFORMANCE.md -->\n\n")
        for l in mach:
            f.write("- " + l + "\n")
        f.write("\n| " + " | ".join(head) + " |\n")
        f.write("| " + " | ".join("---" if i < 2 else "---:" for i in range(len(head))) + " |\n")
        for cells in body:
            f.write("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")
        f.write("\n↑ higher is better, ↓ lower is better. Ratios are oriented so that above 1.00x "
                "%s is better (%s/base for throughput, base/%s for time and memory)."
                % (SUBJECT, SUBJECT, SUBJECT))
        if goals:
            f.write(" goal: issue 5's target for the row (lo = ratio vs loopback, gc = ratio vs "
                    "gocryptfs, max = bound on kmipfs's value).")
        f.write("\n")


if __name__ == "__main__":
    main()
