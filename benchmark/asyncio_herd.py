#!/usr/bin/python3
"""A yardstick, not a product: the herd written the classic way, in Python's asyncio.

    benchmark/asyncio_herd.py NAME [-c config.yml] [--loop asyncio|uvloop]

The exercise this project answers is usually solved with asyncio: a
coroutine per connection, `asyncio.start_server`, updates flooded to the
neighbours.  This file is that design, kept small, so `make report-data`
(benchmark/yardsticks.py) can measure the C herd beside it.  It speaks the
client protocol of docs/PROTOCOL.md (IAMAT, WHATSAT on the local places
file, `? LINE` for anything else) with the same reply bytes as the C server,
and reads the same config.yml (servers, ports, neighbours, places.local_file,
logging.dir and logging.log_lines).

What it leaves out, on purpose: TLS and the herd's secret (links are plain
TCP: a connection whose first line is `LINK NAME` is a neighbour, then both
ends send AT lines; anyone can pretend to be one), trees, anti-entropy
(a link that comes up sends its whole table once), snapshots, Google,
limits other than the line length, metrics.  Do not run it as a service.
"""
import argparse
import asyncio
import json
import math
import os
import re
import signal
import sys
import time

EARTH_KM = 6371.0088
DAY_NS = 86_400 * 10**9
LOCATION = re.compile(rb"([+-])(\d{1,3})\.(\d{1,30})([+-])(\d{1,3})\.(\d{1,30})\Z")
TIME = re.compile(rb"(\d{1,18})(?:\.(\d{1,30}))?\Z")
RADIUS = re.compile(rb"(\d+)(?:\.(\d+))?\Z")
MAX_LINE = 8192


# ------------------------------------------------------------------ config

def parse_value(text):
    """A YAML flow value of the subset config.yml uses: {k: v, ...}, [a, b], a scalar."""
    text = text.strip()
    if text[:1] in "{[":
        items, depth, cur = [], 0, ""
        for ch in text[1:-1]:
            if ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
            if ch == "," and depth == 0:
                items.append(cur)
                cur = ""
            else:
                cur += ch
        items = [i for i in (x.strip() for x in items + [cur]) if i]
        if text[0] == "[":
            return [parse_value(i) for i in items]
        return {k.strip(): parse_value(v) for k, _, v in (i.partition(":") for i in items)}
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def load_config(path):
    """The sections of config.yml as dicts of strings, lists and dicts."""
    cfg, section = {}, None
    with open(path) as f:
        for raw in f:
            line = re.sub(r"\s+#.*$", "", raw.rstrip("\n"))
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, _, rest = line.strip().partition(":")
            if not line[0].isspace():
                section = cfg.setdefault(key, {})
                if rest.strip():
                    section.update(parse_value(rest))
            else:
                section[key] = parse_value(rest)
    base = os.path.dirname(os.path.abspath(path))
    for sec, key in (("places", "local_file"), ("logging", "dir")):
        if key in cfg.get(sec, {}):
            cfg[sec][key] = os.path.join(base, cfg[sec][key])
    return cfg


# ------------------------------------------------------------------ places

def json_number(v):
    """As the C server prints a double: an integer when it is one, else the
    shortest of %.15g, %.16g, %.17g that reads back the same."""
    d = float(v)
    if not math.isfinite(d):
        return "null"
    if abs(d) < 1e15 and d == int(d):
        return str(int(d))
    for prec in (15, 16, 17):
        s = "%.*g" % (prec, d)
        if float(s) == d:
            return s
    return s


def json_string(s):
    out = []
    for ch in s:
        if ch in "\"\\":
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def json_pretty(v, depth):
    """Google's legacy layout: three spaces per level, "key" : value."""
    if isinstance(v, (dict, list)):
        if not v:
            return "{}" if isinstance(v, dict) else "[]"
        pad = "   " * (depth + 1)
        if isinstance(v, dict):
            items = [pad + json_string(k) + " : " + json_pretty(x, depth + 1) for k, x in v.items()]
        else:
            items = [pad + json_pretty(x, depth + 1) for x in v]
        o, c = ("{", "}") if isinstance(v, dict) else ("[", "]")
        return o + "\n" + ",\n".join(items) + "\n" + "   " * depth + c
    if isinstance(v, str):
        return json_string(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json_number(v)
    return "null"


def unit_vector(lat, lng):
    r = math.pi / 180
    return (math.cos(lat * r) * math.cos(lng * r), math.cos(lat * r) * math.sin(lng * r),
            math.sin(lat * r))


def load_places(path):
    """[(x, y, z, rendered JSON at depth 2)] from a GeoJSON FeatureCollection."""
    with open(path) as f:
        feats = json.load(f)["features"]
    places = []
    for feat in feats:
        lng, lat = feat["geometry"]["coordinates"][:2]
        result = {"geometry": {"location": {"lat": float(lat), "lng": float(lng)}}}
        result.update((k, v) for k, v in feat["properties"].items() if k != "geometry")
        result.setdefault("types", [])
        result.setdefault("vicinity", "")
        places.append(unit_vector(lat, lng) + ("      " + json_pretty(result, 2),))
    return places


def places_json(places, lat, lng, radius_km, bound):
    """The nearest `bound` places within the radius, as the C server ranks
    them (squared chord between unit vectors, ties in file order)."""
    qx, qy, qz = unit_vector(lat, lng)
    chord = 2 * math.sin(min(radius_km / EARTH_KM, math.pi) / 2)
    max2 = chord * chord * (1 + 1e-12)
    near = []
    for i, (x, y, z, js) in enumerate(places):
        d = (x - qx) ** 2 + (y - qy) ** 2 + (z - qz) ** 2
        if d <= max2:
            near.append((d, i, js))
    near.sort()
    head = '{\n   "html_attributions" : [],\n   "results" : '
    if not near:
        return head + '[],\n   "status" : "ZERO_RESULTS"\n}'
    return head + "[\n" + ",\n".join(js for _, _, js in near[:bound]) + '\n   ],\n   "status" : "OK"\n}'


# ---------------------------------------------------------------- protocol

def parse_time(b):
    """(seconds, nanoseconds) of a time field, or None."""
    m = TIME.match(b)
    if not m:
        return None
    frac = (m.group(2) or b"") + b"000000000"
    return int(m.group(1)), int(frac[:9])


def parse_location(b):
    """(lat, lng) of an ISO 6709 field within the limits, or None."""
    m = LOCATION.match(b)
    if not m:
        return None
    for ip, fp, limit in ((m.group(2), m.group(3), 90), (m.group(5), m.group(6), 180)):
        if int(ip) > limit or (int(ip) == limit and fp.strip(b"0")):
            return None
    return float(m.group(1) + m.group(2) + b"." + m.group(3)), \
        float(m.group(4) + m.group(5) + b"." + m.group(6))


def parse_radius(b):
    m = RADIUS.match(b)
    if not m:
        return None
    iv, frac = int(m.group(1)), (m.group(2) or b"").strip(b"0")
    if iv > 50 or (iv == 50 and frac) or (iv == 0 and not frac):
        return None
    return float(b) or sys.float_info.min


def format_diff(now_ns, sec, nsec):
    d = now_ns - (sec * 10**9 + nsec)
    return b"%c%d.%09d" % (b"-"[0] if d < 0 else b"+"[0], abs(d) // 10**9, abs(d) % 10**9)


# ------------------------------------------------------------------ server

class Herd:
    """One server: the table, the links, the client connections."""

    def __init__(self, name, cfg):
        self.name = name.encode()
        self.servers = cfg["servers"]
        self.me = self.servers[name]
        self.places = load_places(cfg.get("places", {}).get("local_file", "data/places.geojson"))
        self.table = {}             # client -> ((sec, nsec, location, origin, line), line)
        self.links = {}             # neighbour name -> StreamWriter
        log = cfg.get("logging", {})
        self.log_lines = log.get("log_lines", "true") == "true"
        self.log_buf = []
        os.makedirs(log.get("dir", "logs"), exist_ok=True)
        self.log_file = open(os.path.join(log.get("dir", "logs"), f"{name}.log"), "ab")

    def log(self, who, arrow, line):
        if self.log_lines:
            self.log_buf.append(b"%.6f %s %s %s\n" % (time.time(), who, arrow, line))

    async def flush_log(self):
        while True:
            await asyncio.sleep(0.2)
            if self.log_buf:
                self.log_file.write(b"".join(self.log_buf))
                self.log_file.flush()
                self.log_buf.clear()

    def store(self, client, key, line, sender=None):
        """Keep the newer update and send it on to every link but sender's."""
        old = self.table.get(client)
        if old is not None and old[0] >= key:
            return
        self.table[client] = (key, line)
        for peer, w in self.links.items():
            if peer != sender:
                w.write(line + b"\n")

    def handle(self, line, now_ns):
        """The reply to one client line (bytes, maybe empty)."""
        f = line.split()
        if not f:
            return b""
        if len(f) == 4 and f[0] == b"IAMAT" and len(f[1]) <= 256:
            loc, t = parse_location(f[2]), parse_time(f[3])
            if loc and t and t[0] * 10**9 + t[1] <= now_ns + DAY_NS:
                at = b"AT %s %s %s %s %s" % (self.name, format_diff(now_ns, *t), f[1], f[2], f[3])
                self.store(f[1], (t[0], t[1], f[2], self.name, at), at)
                return at + b"\n"
        elif len(f) == 4 and f[0] == b"WHATSAT" and len(f[1]) <= 256:
            radius, bound = parse_radius(f[2]), f[3]
            held = self.table.get(f[1])
            if radius and bound.isdigit() and 1 <= int(bound) <= 20 and held:
                key, at = held
                lat, lng = parse_location(key[2])
                js = places_json(self.places, lat, lng, radius, int(bound))
                return at + b"\n" + js.encode() + b"\n\n"
        return b"? " + line + b"\n"

    async def serve(self, reader, writer):
        host, port = writer.get_extra_info("peername")[:2]
        who = b"%s:%d" % (host.encode(), port)
        first = True
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:          # longer than the limit
                    writer.write(b"? line too long\n")
                    break
                if not line:
                    break
                now = time.time_ns()
                line = line[:-1] if line.endswith(b"\n") else line
                line = line[:-1] if line.endswith(b"\r") else line
                if first and line.startswith(b"LINK "):
                    await self.peer(line[5:].decode(), reader, writer)
                    return
                first = False
                self.log(who, b"<", line)
                reply = self.handle(line, now)
                if reply:
                    self.log(who, b">", reply.split(b"\n", 1)[0])
                    writer.write(reply)
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def peer(self, name, reader, writer):
        """A link is up: send the whole table, then take AT lines."""
        self.links[name] = writer
        for _, line in self.table.values():
            writer.write(line + b"\n")
        try:
            async for line in reader:
                f = line.split()
                t = parse_time(f[5]) if len(f) == 6 and f[0] == b"AT" else None
                if t:
                    self.store(f[3], (t[0], t[1], f[4], f[1], line.rstrip(b"\r\n")),
                               line.rstrip(b"\r\n"), sender=name)
        except ConnectionError:
            pass
        finally:
            if self.links.get(name) is writer:
                del self.links[name]
            writer.close()

    async def dial(self, name):
        """Keep a link to a neighbour whose name sorts after ours."""
        delay = 0.1
        while True:
            s = self.servers[name]
            try:
                reader, writer = await asyncio.open_connection(s.get("host", "127.0.0.1"),
                                                               int(s["port"]))
                writer.write(b"LINK %s\n" % self.name)
                delay = 0.1
                await self.peer(name, reader, writer)
            except OSError:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.2)

    async def run(self):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await asyncio.start_server(self.serve, self.me.get("host", "127.0.0.1"),
                                            int(self.me["port"]), limit=MAX_LINE + 2)
        tasks = [asyncio.create_task(self.flush_log())]
        tasks += [asyncio.create_task(self.dial(n)) for n in self.me.get("neighbors", [])
                  if n.encode() > self.name]
        await stop.wait()
        server.close()
        for t in tasks:
            t.cancel()
        self.log_file.write(b"".join(self.log_buf))
        self.log_file.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name")
    ap.add_argument("-c", "--config", default="config.yml")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    a = ap.parse_args()
    cfg = load_config(a.config)
    if a.name not in cfg.get("servers", {}):
        sys.exit(f"asyncio_herd: no server {a.name} in {a.config}")
    if a.loop == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(Herd(a.name, cfg).run())


if __name__ == "__main__":
    main()
