#!/usr/bin/env python3
"""fsync_probe: how long fdatasync takes on this disk, with the CPUs idle and
with busy ones.

A durable write waits for one fdatasync of the WAL (shared by its group
commit). sqlite-limit measures SQLite alone on an idle machine; recordd's
writer syncs while the gRPC threads and the load generator keep the CPUs
busy. On some virtual machines that alone makes fdatasync several times
slower (docs/PERFORMANCE.md), which this probe shows on the machine at hand.

Usage: fsync_probe.py [--dir DIR] [--pages N] [--rounds R] [--json]
Writes N 4 KiB pages and fdatasyncs them, R times, idle and then with 1 and
with os.cpu_count() busy-looping processes; prints the median and p90.
"""
import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time


def spin(stop):
    while not stop.is_set():
        pass


def probe(path, pages, rounds):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        span = 16 << 20
        os.ftruncate(fd, span)
        os.fsync(fd)
        page = b"\x5a" * 4096
        off, times = 0, []
        for _ in range(rounds):
            for _ in range(pages):
                os.pwrite(fd, page, off)
                off = (off + 4096) % span
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t0) * 1e6)
        times.sort()
        return {
            "mean_us": statistics.fmean(times),
            "median_us": statistics.median(times),
            "p90_us": times[int(len(times) * 0.9)],
        }
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--pages", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    o = ap.parse_args()
    path = os.path.join(o.dir, "fsync-probe.%d" % os.getpid())
    out = {"pages": o.pages, "rounds": o.rounds}
    try:
        out["idle"] = probe(path, o.pages, o.rounds)
        for busy in sorted({1, os.cpu_count() or 1}):
            stop = multiprocessing.Event()
            procs = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(busy)]
            for p in procs:
                p.start()
            try:
                time.sleep(0.2)
                out["busy_%d" % busy] = probe(path, o.pages, o.rounds)
            finally:
                stop.set()
                for p in procs:
                    p.join()
    finally:
        if os.path.exists(path):
            os.unlink(path)
    if o.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        if isinstance(v, dict):
            print("fdatasync of %d pages, %-7s mean %6.0f us  median %6.0f us  p90 %6.0f us" % (
                o.pages, k, v["mean_us"], v["median_us"], v["p90_us"]))


if __name__ == "__main__":
    sys.exit(main())
