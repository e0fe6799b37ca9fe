"""Writes COUNT distinct 4 KiB blocks at queue depth 32 through NBD and prints each block number
the moment its write is acknowledged (so a test knows exactly which writes a crash must keep).

usage: qd32_writer.py URI SEED NBLOCKS START COUNT TAG
The blocks are positions START..START+COUNT of a SEED-shuffled 0..NBLOCKS; block b is filled
with the bytes of pattern(b, TAG), which the test recomputes to verify.
"""
import random
import sys

import nbd

uri, seed, nblocks, start, count, tag = sys.argv[1], *map(int, sys.argv[2:7])
order = list(range(nblocks))
random.Random(seed).shuffle(order)
blocks = order[start:start + count]


def pattern(b):
    head = b"udrbd block %08d tag %04d " % (b, tag)
    return (head * (4096 // len(head) + 1))[:4096]


h = nbd.NBD()
h.connect_uri(uri)
inflight = {}
issued = 0
try:
    while issued < len(blocks) or inflight:
        while issued < len(blocks) and len(inflight) < 32:
            b = blocks[issued]
            cookie = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(pattern(b))), b * 4096)
            inflight[cookie] = b
            issued += 1
        h.poll(-1)
        while h.aio_in_flight() < len(inflight):
            c = h.aio_peek_command_completed()
            if not c:
                break
            h.aio_command_completed(c)
            print(inflight.pop(c), flush=True)
except nbd.Error as e:
    print("error", e, file=sys.stderr, flush=True)
    sys.exit(3)
print("done", file=sys.stderr, flush=True)
