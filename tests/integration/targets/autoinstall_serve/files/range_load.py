# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many concurrent Range requests against one large file; every answer is checked byte for byte.

usage: range_load.py URL FILE [--requests N] [--seed S]

All N requests are sent at once (a barrier releases N threads, one connection
each): closed ranges, open-ended ranges (bytes=N-) and suffix ranges (bytes=-N),
as installers, ostree and HTTP-backed block devices send them (RFC 9110, 14.1.2).
Each answer must be 206 with the matching Content-Range and exactly the bytes of
FILE. Prints one JSON line; exits 1 on any error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse


def one(url: urllib.parse.SplitResult, path: str, size: int, header: str, first: int, last: int,
        barrier: threading.Barrier) -> str:
    """'' when the answer is right, else what was wrong."""
    barrier.wait()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:
        conn.request('GET', url.path, headers={'Range': header})
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return '%s: %s' % (header, exc)
    finally:
        conn.close()
    if response.status != 206:
        return '%s: status %d' % (header, response.status)
    expected_range = 'bytes %d-%d/%d' % (first, last, size)
    if response.getheader('Content-Range') != expected_range:
        return '%s: Content-Range %r, not %r' % (header, response.getheader('Content-Range'), expected_range)
    with open(path, 'rb') as handle:
        handle.seek(first)
        if body != handle.read(last - first + 1):
            return '%s: %d bytes that differ from the file' % (header, len(body))
    return ''


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('url')
    parser.add_argument('file')
    parser.add_argument('--requests', type=int, default=200)
    parser.add_argument('--seed', type=int, default=1)
    args = parser.parse_args()
    size = os.path.getsize(args.file)
    url = urllib.parse.urlsplit(args.url)
    rand = random.Random(args.seed)
    jobs = []
    for index in range(args.requests):
        length = rand.randint(1, 4 * 1048576)
        kind = index % 3
        if kind == 0:
            first = rand.randrange(0, size - length)
            jobs.append(('bytes=%d-%d' % (first, first + length - 1), first, first + length - 1))
        elif kind == 1:
            first = size - length
            jobs.append(('bytes=%d-' % first, first, size - 1))
        else:
            jobs.append(('bytes=-%d' % length, size - length, size - 1))
    barrier = threading.Barrier(len(jobs))
    errors: list = []
    lock = threading.Lock()

    def run(job: tuple) -> None:
        problem = one(url, args.file, size, job[0], job[1], job[2], barrier)
        if problem:
            with lock:
                errors.append(problem)

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({'requests': len(jobs), 'errors': len(errors), 'first_errors': errors[:5],
                      'seconds': round(time.monotonic() - started, 2)}))
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
