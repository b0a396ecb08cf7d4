#!/usr/bin/python3
"""places_sample.py -- write a test GeoJSON FeatureCollection of N places.

    benchmark/places_sample.py N OUT [--seed S]

The same N and seed give the same bytes.  About half the places are
spread uniformly over the sphere; the others gather in towns (Gaussian,
a few km to tens of km wide), one of them around the default coordinates
(34.068930, -118.445127) so that WHATSATs there find places, and some near
the poles and on both sides of the antimeridian.  One place in fifty
repeats an earlier place's coordinates exactly.  One feature per line,
compact, so that 1,000,000 places stay under the 256 MiB file bound.
"""
import argparse
import math
import random
import sys

TYPES = ["cafe", "restaurant", "library", "park", "museum", "bar", "store",
         "school", "bank", "pharmacy"]

# (lat, lng, spread in km): the default spot, cities, and awkward places
TOWNS = [(34.068930, -118.445127, 8), (34.05, -118.25, 20), (40.71, -74.0, 15),
         (51.5, -0.12, 15), (35.68, 139.69, 25), (-33.87, 151.21, 15),
         (64.84, -147.72, 10), (-17.7, 178.0, 30), (-17.7, -179.9, 30),
         (65.0, 180.0, 40), (89.95, 0.0, 10), (-89.9, 45.0, 10),
         (0.0, 0.0, 50), (78.22, 15.65, 5)]


def uniform(rnd):
    """A point uniform on the sphere: lat from a uniform z."""
    return math.degrees(math.asin(rnd.uniform(-1, 1))), rnd.uniform(-180, 180)


def near(rnd, lat, lng, km):
    """A point about km from (lat, lng): a step north and a step east,
    folded back onto the sphere's coordinate ranges."""
    dlat = rnd.gauss(0, km) / 111.195
    plat = lat + dlat
    c = max(math.cos(math.radians(min(abs(plat), 89.999))), 1e-6)
    plng = lng + rnd.gauss(0, km) / (111.195 * c)
    if plat > 90:
        plat, plng = 180 - plat, plng + 180
    elif plat < -90:
        plat, plng = -180 - plat, plng + 180
    plng = (plng + 180) % 360 - 180
    return plat, plng


def place(rnd, i, seen):
    if seen and rnd.random() < 0.02:
        return rnd.choice(seen)
    if rnd.random() < 0.5:
        lat, lng = uniform(rnd)
    else:
        lat, lng = near(rnd, *rnd.choice(TOWNS))
    lat, lng = round(lat, 6), round(lng, 6)
    if len(seen) < 10000:
        seen.append((lat, lng))
    return lat, lng


def feature(rnd, i, lat, lng):
    kinds = '","'.join(rnd.sample(TYPES, 2))
    return ('{"type":"Feature","geometry":{"type":"Point","coordinates":[%r,%r]},'
            '"properties":{"name":"Place %d","place_id":"sample-%d","types":["%s"],'
            '"vicinity":"%d Sample Street","rating":%.1f}}'
            % (lng, lat, i, i, kinds, rnd.randrange(1, 10000), rnd.uniform(1, 5)))


def main():
    ap = argparse.ArgumentParser(description="write a test GeoJSON of N places")
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=26)
    a = ap.parse_args()
    rnd, seen = random.Random(a.seed), []
    with open(a.out, "w") as f:
        f.write('{"type":"FeatureCollection","features":[\n')
        for i in range(a.n):
            lat, lng = place(rnd, i, seen)
            f.write(feature(rnd, i, lat, lng) + (",\n" if i + 1 < a.n else "\n"))
        f.write("]}\n")
    print(f"{a.out}: {a.n} places (seed {a.seed})", file=sys.stderr)


if __name__ == "__main__":
    main()
