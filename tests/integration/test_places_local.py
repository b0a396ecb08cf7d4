"""The local places provider at more than a sample's size (docs/PROTOCOL.md,
"Places"): a server started on a generated file of a few thousand places
answers each WHATSAT with exactly the places a full scan finds, in the
scan's order, wherever the client is (in a town, at a pole, on either
side of the antimeridian, on a place that shares its coordinates with
others)."""
import json
import math
import os
import random
import subprocess
import sys

from harness import ROOT, exchange

EARTH_KM = 6371.0088
RAD = math.pi / 180.0


def unit(lat, lng):
    """The unit vector, computed as server/places.c computes it."""
    cl = math.cos(lat * RAD)
    return cl * math.cos(lng * RAD), cl * math.sin(lng * RAD), math.sin(lat * RAD)


def chord2(p, q):
    dx, dy, dz = p[0] - q[0], p[1] - q[1], p[2] - q[2]
    return dx * dx + dy * dy + dz * dz


def haversine(lat1, lng1, lat2, lng2):
    a = (math.sin((lat2 - lat1) * RAD / 2) ** 2
         + math.cos(lat1 * RAD) * math.cos(lat2 * RAD) * math.sin((lng2 - lng1) * RAD / 2) ** 2)
    return 2 * EARTH_KM * math.asin(math.sqrt(min(a, 1)))


def scan(places, lat, lng, radius_km, bound):
    """The full scan: within the radius by the squared chord (the radius's
    chord squared, plus one part in 10^12), nearest first, equal distances
    in file order, at most bound."""
    q = unit(lat, lng)
    chord = 2 * math.sin(min(radius_km / EARTH_KM, math.pi) / 2)
    max2 = chord * chord * (1 + 1e-12)
    near = sorted((d, i) for i, d in ((i, chord2(p["u"], q)) for i, p in enumerate(places))
                  if d <= max2)
    return [places[i]["id"] for _, i in near[:bound]]


def generate(tmp_path, n, seed=7, path=None):
    """A places_sample.py file of n places (at path, else in tmp_path), and
    its places as the server computes them."""
    path = path or str(tmp_path / f"places-{n}-{seed}.geojson")
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmark", "places_sample.py"),
                    str(n), path, "--seed", str(seed)], check=True, capture_output=True)
    with open(path) as f:
        feats = json.load(f)["features"]
    places = []
    for ft in feats:
        lng, lat = ft["geometry"]["coordinates"]
        places.append({"lat": lat, "lng": lng, "u": unit(lat, lng),
                       "id": ft["properties"]["place_id"]})
    return path, places


def location(lat, lng):
    return b"%+.6f%+.6f" % (lat, lng)


def queries(places):
    """(lat, lng, radius text, bound): on places (shared coordinates
    included), near the default spot, at and near the poles, on both sides
    of the antimeridian, and radii that end just past a place."""
    rnd = random.Random(26)
    spots = [(34.068930, -118.445127), (89.95, 0.0), (90.0, 0.0), (-90.0, 45.0),
             (-89.9, 45.0), (-17.7, 179.999), (-17.7, -179.999), (-17.7, 180.0),
             (65.0, -180.0), (65.0, 179.95), (0.0, 0.0)]
    radii = [b"0.5", b"2", b"5", b"12.75", b"30", b"50"]
    out = [(lat, lng, r, 20) for lat, lng in spots for r in (b"5", b"50")]
    dup = {}
    for p in places:
        dup.setdefault((p["lat"], p["lng"]), []).append(p)
    shared = [k for k, v in dup.items() if len(v) > 1]
    for k in rnd.sample(shared, min(8, len(shared))):
        out.append((round(k[0], 6), round(k[1], 6), rnd.choice(radii), rnd.randint(1, 20)))
    for _ in range(40):
        p = rnd.choice(places)
        lat = min(90.0, max(-90.0, p["lat"] + rnd.uniform(-0.05, 0.05)))
        lng = min(180.0, max(-180.0, p["lng"] + rnd.uniform(-0.05, 0.05)))
        out.append((round(lat, 6), round(lng, 6), rnd.choice(radii), rnd.randint(1, 20)))
    for _ in range(40):          # a place on the radius: the farthest found
        p = rnd.choice(places)
        lat, lng = round(p["lat"] + rnd.uniform(-0.02, 0.02), 6), round(p["lng"], 6)
        lat = min(90.0, max(-90.0, lat))
        ds = sorted(d for d in (haversine(lat, lng, o["lat"], o["lng"]) for o in places)
                    if 0.01 < d < 49.9)
        if ds:
            d = ds[min(len(ds) - 1, rnd.randint(0, 14))]
            out.append((lat, lng, b"%.9f" % (d + 2e-9), 20))
    return out


def test_whatsat_on_thousands_of_places_is_the_full_scan(make_server, tmp_path):
    path, places = generate(tmp_path, 4000)
    server = make_server(places={"local_file": path})
    answered = full = 0
    for k, (lat, lng, radius, bound) in enumerate(queries(places)):
        client = b"q%d" % k
        loc = location(lat, lng)
        at = exchange(server.port, b"IAMAT %s %s 1700000000.5\n" % (client, loc))
        assert at.startswith(b"AT ") and loc in at, at
        reply = exchange(server.port, b"WHATSAT %s %s %d\n" % (client, radius, bound))
        first, body = reply.split(b"\n", 1)
        assert first == at[:-1] and body.endswith(b"}\n\n"), reply[-40:]
        js = json.loads(body)
        qlat, qlng = float(b"%.6f" % lat), float(b"%.6f" % lng)   # as the server reads them
        want = scan(places, qlat, qlng, float(radius), bound)
        got = [r["place_id"] for r in js["results"]]
        assert got == want, (loc, radius, bound)
        assert js["status"] == ("OK" if want else "ZERO_RESULTS")
        # and the scan is the haversine's answer, but for places on the radius
        r = float(radius)
        for p in places:
            d = haversine(qlat, qlng, p["lat"], p["lng"])
            if abs(d - r) > 1e-6 and len(got) < bound:
                assert (p["id"] in got) == (d < r), (loc, radius, p["id"], d)
        answered += bool(got)
        full += len(got) == bound
    assert answered > 40 and full > 15, (answered, full)
