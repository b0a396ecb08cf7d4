#!/usr/bin/python3
"""Build report.pdf from docs/report.md and the measurements in docs/data/.

    docs/report/build.py [--out report.pdf] [--work build/report] [--data docs/data]

Steps: the figures' data files from the JSON, the plots (gnuplot), the
architecture diagram (graphviz), the text with its {{...}} figures filled
in from the JSON, HTML (pandoc), PDF (weasyprint).  Every figure in the
text comes from a file in docs/data/, never typed by hand:

    {{machine}} {{machine:replicated}}  the measuring machine (of the sweep, of a file)
    {{value:sweep.SERIES@C.KEY.KEY}}    a number from the concurrency sweep
    {{value:propagation.KEY.KEY}}       a number from the propagation run
    {{value:forwarding.KEY.KEY}}        a number from the forwarding A/B run
    {{value:replicated.KEY.KEY}}        the herd against redis with four replicas
    {{value:asyncio.KEY.KEY}}           the herd against the asyncio yardstick
    {{ratio:A/B}}                       two such numbers divided
    {{table:throughput}} {{table:latency}} {{table:cpu}}
    {{table:replicated}} {{table:asyncio}}
    {{measured:TEST}}                   what a test reported (resilience.jsonl)
    {{command:NAME}}                    the command that made a figure
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")
DATA = os.path.join(DOCS, "data")
HERE = os.path.join(DOCS, "report")

SERIES = [("redis_ping", "redis PING"), ("solo_iamat", "one server IAMAT"),
          ("herd_iamat", "herd IAMAT"), ("solo_whatsat", "one server WHATSAT")]


def fail(msg):
    sys.exit(f"report: {msg}")


def load(name):
    path = os.path.join(DATA, name)
    try:
        with open(path) as f:
            if name.endswith(".jsonl"):
                return [json.loads(line) for line in f if line.strip()]
            return json.load(f)
    except FileNotFoundError:
        fail(f"{os.path.relpath(path, ROOT)} is missing (make report-data measures it)")


def lookup(data, path):
    """sweep.herd_iamat@20.latency_us.p99 or propagation.servers_us.all.p99"""
    head, *rest = path.split(".")
    node = data[head]
    if head == "sweep" and rest and "@" in rest[0]:
        series, _, conc = rest[0].partition("@")
        runs = [r for r in node["series"][series] if r["concurrency"] == int(conc)]
        if not runs:
            fail(f"no {series} run at concurrency {conc}")
        node, rest = runs[0], rest[1:]
    for key in rest:
        node = node[key]
    return node


def fmt(v):
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def tables(data):
    sweep = data["sweep"]
    by = {name: {r["concurrency"]: r for r in runs} for name, runs in sweep["series"].items()}

    def rps(name, c):
        r = by.get(name, {}).get(c)
        return r["rps"] if r else None

    def cell(v):
        return fmt(v) if v is not None else "-"

    def ratio(a, b):
        return f"{a / b:.2f}x" if a is not None and b else "-"

    out = {}
    rows = ["| connections | redis PING | one server IAMAT | (vs redis) | herd IAMAT | (vs redis) "
            "| WHATSAT | (vs IAMAT) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in sweep["levels"]:
        r, s, h, w = (rps(n, c) for n in ("redis_ping", "solo_iamat", "herd_iamat", "solo_whatsat"))
        rows.append(f"| {c} | {cell(r)} | {cell(s)} | {ratio(s, r)} | {cell(h)} | {ratio(h, r)} "
                    f"| {cell(w)} | {ratio(w, s)} |")
    out["throughput"] = "\n".join(rows)
    rows = ["| connections | " + " | ".join(label for _, label in SERIES) + " |",
            "|---:|" + "---:|" * len(SERIES)]
    for c in sweep["levels"]:
        cells = []
        for name, _ in SERIES:
            r = by.get(name, {}).get(c)
            cells.append(f"{r['latency_us']['p50']:.0f} / {r['latency_us']['p99']:.0f}" if r else "-")
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    out["latency"] = "\n".join(rows)
    cpu, cpus = sweep.get("cpu", {}), sweep["machine"]["cpus"]
    rows = ["| at 20 connections | server CPU | in the kernel | waiting for a CPU | client CPU "
            f"| ceiling on {cpus} CPUs | measured |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, label in (("redis_ping", "redis PING"), ("solo_iamat", "one server IAMAT"),
                        ("solo_whatsat", "one server WHATSAT"),
                        ("herd_iamat", "herd IAMAT (five servers)")):
        c = cpu.get(name)
        if c:
            share = c["server_kernel_share"]
            ceiling = cpus * 1e6 / (c["server_cpu_us"] + c["client_cpu_us"])
            rows.append(f"| {label} | {c['server_cpu_us']:.1f} µs | "
                        + (f"{share:.0%}" if share is not None else "-")
                        + f" | {c['server_wait_us']:.1f} µs | {c['client_cpu_us']:.1f} µs "
                        f"| {fmt(ceiling)}/s | {fmt(c['rps'])}/s |")
    out["cpu"] = "\n".join(rows)
    out["replicated"] = replicated_table(data["replicated"])
    out["asyncio"] = asyncio_table(data["asyncio"])
    return out


def replicated_table(rep):
    """The herd against redis-server with four replicas, medians of the rounds."""
    h, r = rep["median"]["herd_iamat"], rep["median"]["redis_replicated_set"]
    rows = ["| c=20, medians of the rounds | writes/s | CPU per write (five processes) "
            "| p50 | p99 |", "|---|---:|---:|---:|---:|"]
    p = rep["median"]["redis_ping"]

    def ratios(label, a, b):
        return (f"| {label} | {a['rps'] / b['rps']:.2f}x | {a['cpu_us'] / b['cpu_us']:.2f}x "
                f"| {a['p50_us'] / b['p50_us']:.2f}x | {a['p99_us'] / b['p99_us']:.2f}x |")
    one = rep["median"].get("herd_iamat_one_entry")     # not in runs before it was measured
    sides = [("herd IAMAT (clients on all five servers, trees)", h)]
    if one:
        sides.append(("herd IAMAT (clients on Bona only, as redis's on its master)", one))
    sides += [("redis SET (master and four replicas)", r),
              ("redis PING (to the master: nothing stored)", p)]
    for label, m in sides:
        rows.append(f"| {label} | {fmt(m['rps'])} | {m['cpu_us']:.1f} µs | {m['p50_us']:.0f} µs "
                    f"| {m['p99_us']:.0f} µs |")
    rows.append(ratios("herd / redis SET", h, r))
    if one:
        rows.append(ratios("herd on Bona only / redis SET", one, r))
    rows.append(ratios("herd / redis PING", h, p))
    return "\n".join(rows)


ASYNCIO_KINDS = (("c", "C herd"), ("asyncio", "asyncio herd"), ("uvloop", "asyncio herd, uvloop"))


def asyncio_table(js):
    """The C herd beside the asyncio yardstick: medians, and ratios to C."""
    med, c = js["median"], js["median"]["c_iamat"]
    rows = ["| five servers, c=20 | IAMAT/s | p50 / p99 | CPU per IAMAT | WHATSAT/s | p50 / p99 "
            "| CPU per WHATSAT | propagation p50 / p99 | bytes per client |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, label in ASYNCIO_KINDS:
        if kind not in js["kinds"]:
            continue
        i, w = med[f"{kind}_iamat"], med[f"{kind}_whatsat"]
        p, m = js["propagation"][kind], js["memory"][kind]
        rows.append(f"| {label} | {fmt(i['rps'])} | {i['p50_us']:.0f} / {i['p99_us']:.0f} µs "
                    f"| {i['cpu_us']:.0f} µs | {fmt(w['rps'])} | {w['p50_us']:.0f} / "
                    f"{w['p99_us']:.0f} µs | {w['cpu_us']:.0f} µs | {p['p50']:.0f} / "
                    f"{p['p99']:.0f} µs | {m['bytes_per_client']:.0f} |")
    for kind, label in ASYNCIO_KINDS[1:]:
        if kind not in js["kinds"]:
            continue
        i, w = med[f"{kind}_iamat"], med[f"{kind}_whatsat"]
        cw, p, m = med["c_whatsat"], js["propagation"], js["memory"]
        rows.append(f"| {label} / C | {i['rps'] / c['rps']:.2f}x | {i['p99_us'] / c['p99_us']:.1f}x p99 "
                    f"| {i['cpu_us'] / c['cpu_us']:.1f}x | {w['rps'] / cw['rps']:.2f}x "
                    f"| {w['p99_us'] / cw['p99_us']:.1f}x p99 | {w['cpu_us'] / cw['cpu_us']:.1f}x "
                    f"| {p[kind]['p50'] / p['c']['p50']:.1f}x / {p[kind]['p99'] / p['c']['p99']:.1f}x "
                    f"| {m[kind]['bytes_per_client'] / m['c']['bytes_per_client']:.1f}x |")
    return "\n".join(rows)


def fill(text, data, measured):
    tabs = tables(data)

    def one(m):
        kind, _, arg = m.group(1).partition(":")
        if kind == "machine":
            mc = data[arg or "sweep"]["machine"]
            return f"{mc['cpus']} vCPU ({mc['cpu']}), Linux {mc['kernel']}, measured {mc['date']}"
        if kind == "value":
            return fmt(lookup(data, arg))
        if kind == "ratio":
            a, b = arg.split("/")
            return f"{lookup(data, a) / lookup(data, b):.2f}"
        if kind == "table":
            return tabs[arg]
        if kind == "measured":
            lines = [m["text"] for m in measured if m["test"] == arg]
            if not lines:
                fail(f"docs/data/resilience.jsonl has nothing from {arg}")
            return "; ".join(lines)
        if kind == "command":
            if arg == "sweep":
                return ("`make report-data` (benchmark/report_data.py), which runs "
                        "`herd-benchmark --concurrency C --duration "
                        f"{fmt(data['sweep']['duration_s'])}` "
                        f"{fmt(data['sweep'].get('repeat', 1))} times for each series and level")
            return f"`{data[arg]['command']}`"
        fail(f"unknown placeholder {{{{{m.group(1)}}}}}")
    return re.sub(r"\{\{([^}]+)\}\}", one, text)


def write_dat(data, work):
    sweep = data["sweep"]
    for name, runs in sweep["series"].items():
        with open(os.path.join(work, f"{name}.dat"), "w") as f:
            f.write("# concurrency rps p50_us p99_us\n")
            for r in sorted(runs, key=lambda r: r["concurrency"]):
                f.write(f"{r['concurrency']} {r['rps']} {r['latency_us']['p50']} "
                        f"{r['latency_us']['p99']}\n")
    # forwarding along trees against flooding (benchmark/forwarding_ab.py)
    runs = data["forwarding"]["runs"]
    with open(os.path.join(work, "forwarding.dat"), "w") as f:
        f.write("# round flood_rps tree_rps redis_rps\n")
        for i, (a, b) in enumerate(zip(runs["flood"], runs["tree"])):
            r = runs["redis"][i]["rps"] if "redis" in runs else "NaN"
            f.write(f"{i + 1} {a['rps']} {b['rps']} {r}\n")
    with open(os.path.join(work, "forwarding_cpu.dat"), "w") as f:
        f.write("# server flood_cpu_s tree_cpu_s (mean per run)\n")
        for n in runs["flood"][0]["cpu_s"]:
            mean = [sum(r["cpu_s"][n] for r in runs[m]) / len(runs[m]) for m in ("flood", "tree")]
            f.write(f"{n} {mean[0]:.3f} {mean[1]:.3f}\n")
    # the herd against redis with four replicas (benchmark/yardsticks.py)
    with open(os.path.join(work, "replicated.dat"), "w") as f:
        f.write("# round herd_rps redis_set_rps redis_ping_rps\n")
        for i, r in enumerate(data["replicated"]["rounds"]):
            f.write(f"{i + 1} {r['herd_iamat']['rps']} {r['redis_replicated_set']['rps']} "
                    f"{r['redis_ping']['rps']}\n")
    # the C herd and the asyncio yardstick, medians
    js = data["asyncio"]
    with open(os.path.join(work, "asyncio.dat"), "w") as f:
        f.write("# kind iamat_rps whatsat_rps (uvloop: NaN when not measured)\n")
        for kind, label in ASYNCIO_KINDS:
            med = js["median"]
            i, w = (med[f"{kind}_{m}"]["rps"] if f"{kind}_{m}" in med else "NaN"
                    for m in ("iamat", "whatsat"))
            f.write(f'"{label}" {i} {w}\n')
    samples = data["propagation"]["all_sorted_us"]
    with open(os.path.join(work, "propagation.dat"), "w") as f:
        f.write("# microseconds fraction_of_updates\n")
        for i, v in enumerate(samples):
            f.write(f"{v} {(i + 1) / len(samples)}\n")


def run(cmd, **kw):
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)} failed (exit {r.returncode})")


def check_pages(pdf, work):
    """Render every page (pdftoppm) and make sure none is blank."""
    pages = os.path.join(work, "pages")
    shutil.rmtree(pages, ignore_errors=True)
    os.makedirs(pages)
    run(["pdftoppm", "-r", "40", "-gray", pdf, os.path.join(pages, "page")])
    names = sorted(n for n in os.listdir(pages) if n.endswith(".pgm"))
    if not names:
        fail(f"{pdf} has no pages that render")
    for name in names:
        with open(os.path.join(pages, name), "rb") as f:
            data = f.read()
        # P5 header: magic, width, height, maxval, one white-space byte,
        # then one byte per pixel.
        m = re.match(rb"P5\s+(\d+)\s+(\d+)\s+\d+\s", data)
        if not m:
            fail(f"pdftoppm wrote an unexpected image {name}")
        pixels = data[m.end():m.end() + int(m.group(1)) * int(m.group(2))]
        inked = sum(1 for b in pixels if b < 128)
        if inked < 50:
            fail(f"page {name} of {pdf} renders blank")
    return len(names)


def main():
    global DATA
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default=os.path.join(ROOT, "report.pdf"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "report"))
    ap.add_argument("--data", default=DATA, help="the measurements (default: docs/data)")
    a = ap.parse_args()
    DATA = a.data
    for tool in ("gnuplot", "dot", "pandoc", "weasyprint", "pdftoppm"):
        if not shutil.which(tool):
            fail(f"{tool} is not installed (make deps installs it)")
    os.makedirs(a.work, exist_ok=True)
    data = {"sweep": load("sweep.json"), "propagation": load("propagation.json"),
            "resources": load("resources.json"), "forwarding": load("forwarding_ab.json"),
            "replicated": load("replicated.json"), "asyncio": load("asyncio.json")}
    data["open"] = data["sweep"]["open"]
    data["forwarding"]["median"] = {   # rps, per mode, over the interleaved rounds
        m: sorted(r["rps"] for r in runs)[len(runs) // 2]
        for m, runs in data["forwarding"]["runs"].items()}
    measured = load("resilience.jsonl")

    print("report: plots", flush=True)
    write_dat(data, a.work)
    run(["gnuplot", "-e", f"dir='{a.work}'", os.path.join(HERE, "plots.gp")])
    run(["dot", "-Tsvg", os.path.join(HERE, "architecture.dot"), "-o",
         os.path.join(a.work, "architecture.svg")])
    shutil.copy(os.path.join(HERE, "report.css"), a.work)

    print("report: text", flush=True)
    with open(os.path.join(DOCS, "report.md")) as f:
        text = fill(f.read(), data, measured)
    md = os.path.join(a.work, "report.md")
    with open(md, "w") as f:
        f.write(text)
    html = os.path.join(a.work, "report.html")
    run(["pandoc", md, "--standalone", "--from", "markdown", "--to", "html5",
         "--css", "report.css", "--toc", "--toc-depth=2", "--number-sections", "-o", html])

    print("report: pdf", flush=True)
    run(["weasyprint", "--quiet", html, a.out])
    n = check_pages(a.out, a.work)
    print(f"report: wrote {os.path.relpath(a.out, os.getcwd())} ({n} pages, each renders; "
          f"images in {os.path.relpath(os.path.join(a.work, 'pages'), os.getcwd())})")


if __name__ == "__main__":
    main()
