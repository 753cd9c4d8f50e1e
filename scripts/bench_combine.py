#!/usr/bin/env python3
"""Joins `keel bench --markdown` and `bench/peers/run.sh` tables (same thread count) into one
comparison table: keel's fraction of the op's floor beside each peer's, and keel's speed-up.

usage: bench_combine.py KEEL_TABLE PEERS_TABLE   (files holding the Markdown output)
The floor of a case is the op's own stream floor measured by keel bench in the same run as keel
(a kernel reading and writing the op's streams with trivial arithmetic, the faster of ordinary
and streaming stores; its GB/s counts the op's bytes), or, in a table without it, the faster copy
(glibc memcpy or streaming stores); the peers ran right after, in their own processes. Works for the float32
tables and for the low-precision ones (`keel bench --dtype bf16,f16,i8`, `run.sh --lowp`): rows are
matched by op name and shape, and a peer row for shape "all" (an op the peer cannot run) gives
its reason in every case of that op."""
import sys


def rows(path):
    out = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        out.append(cells)
    return out[1:] if out else []  # drop the header


def number(s):
    try:
        return float(s)
    except ValueError:
        return None


def main():
    keel = {}
    for c in rows(sys.argv[1]):
        op, shape, _mib, _us, gbs, memcpy, stream, frac = c[:8]
        if len(c) >= 11:  # the own floor: GB/s, stores, fraction
            keel[(op, shape)] = (float(gbs), float(c[8]), float(c[10]))
        else:
            keel[(op, shape)] = (float(gbs), max(float(memcpy), float(stream)), float(frac))
    peers = {}
    names = []
    for c in rows(sys.argv[2]):
        peer, op, shape, _us, gbs = c[:5]
        check = c[5] if len(c) > 5 else ""
        if peer not in names:
            names.append(peer)
        peers[(peer, op, shape)] = (number(gbs), check)
    head = "| op | rows x dim | floor GB/s | keel GB/s (fraction) |"
    rule = "|---|---|---|---|"
    for n in names:
        head += f" {n} GB/s (fraction) | keel / {n} |"
        rule += "---|---|"
    print(head)
    print(rule)
    for (op, shape), (gbs, floor, frac) in keel.items():
        line = f"| {op} | {shape} | {floor:.1f} | {gbs:.1f} ({frac:.2f}) |"
        for n in names:
            p = peers.get((n, op, shape)) or peers.get((n, op, "all"))
            if not p or p[0] is None:
                why = p[1] if p else "not run"
                line += f" - ({why[:60]}) | - |"
            else:
                line += f" {p[0]:.1f} ({p[0] / floor:.2f}) | {gbs / p[0]:.2f}x |"
        print(line)


if __name__ == "__main__":
    main()
