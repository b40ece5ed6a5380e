"""Benchmark: image_export of a 4 GiB disk to qcow2+zstd and to streamOptimized vmdk.

The reference, on the same disk in the same run, is what a user would type:
``qemu-img convert`` to qcow2, ``zstd -T0`` of it and ``sha256sum`` of the result,
then ``qemu-img convert`` to vmdk and ``sha256sum`` of it. Each side runs
REPEAT times; the best time of each is compared. Prints JSON, last line the ratio
(image_export / reference; below 1 is faster).

    .venv/bin/python benchmarks/export.py [--size 4G] [--data 1G] [--repeat 2] [--dir DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '.collections'))

from ansible_collections.osimage.builder.plugins.module_utils._export import (  # noqa: E402
    Exporter, ExportRequest)
from ansible_collections.osimage.builder.plugins.module_utils._sizes import parse_size  # noqa: E402

MIB = 1024 * 1024


def run(argv, check_rc=False, data=None):
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def make_disk(path, size, data):
    """A sparse disk with `data` bytes written: a quarter random, the rest compressible text."""
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', path, str(size)], check=True)
    random_part = data // 4
    with open(path, 'r+b') as disk, open('/dev/urandom', 'rb') as urandom:
        disk.seek(64 * MIB)
        for _chunk in range(random_part // MIB):
            disk.write(urandom.read(MIB))
        line = b''.join(b'%08d osimage.builder benchmark line of compressible text\n' % i for i in range(20000))
        disk.seek(size // 2)
        written = 0
        while written < data - random_part:
            disk.write(line[:MIB])
            written += MIB


def reference(src, work):
    qcow2, vmdk = os.path.join(work, 'ref.qcow2'), os.path.join(work, 'ref.vmdk')
    started = time.monotonic()
    subprocess.run(['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', src, qcow2], check=True)
    subprocess.run(['zstd', '-q', '-T0', '-f', qcow2, '-o', qcow2 + '.zst'], check=True)
    subprocess.run(['sha256sum', qcow2 + '.zst'], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized',
                    src, vmdk], check=True)
    subprocess.run(['sha256sum', vmdk], check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    sizes = {'qcow2.zst': os.path.getsize(qcow2 + '.zst'), 'vmdk': os.path.getsize(vmdk)}
    for path in (qcow2, qcow2 + '.zst', vmdk):
        os.unlink(path)
    return seconds, sizes


def ours(src, work, jobs):
    dest = os.path.join(work, 'out')
    started = time.monotonic()
    result = Exporter(run).export(ExportRequest(
        src=src, dest=dest, basename='bench', src_format='raw', jobs=jobs,
        formats=[{'format': 'qcow2', 'compress': 'zstd'}, 'vmdk'], checksums=['sha256']))
    seconds = time.monotonic() - started
    sizes = {a['name'].split('.', 1)[1]: a['size'] for a in result['artifacts']}
    shutil.rmtree(dest)
    return seconds, sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', default='4G')
    parser.add_argument('--data', default='1G')
    parser.add_argument('--repeat', type=int, default=2)
    parser.add_argument('--dir', default=None, help='scratch directory (default: a new one under /var/tmp)')
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='osimage-bench-', dir=args.dir or '/var/tmp')
    try:
        src = os.path.join(work, 'disk.raw')
        make_disk(src, parse_size(args.size), parse_size(args.data))
        ref, par, seq = [], [], []
        for _round in range(args.repeat):
            ref.append(reference(src, work))
            par.append(ours(src, work, 0))
            seq.append(ours(src, work, 1))
        best = {name: min(runs, key=lambda r: r[0]) for name, runs in
                (('reference', ref), ('image_export', par), ('image_export_jobs1', seq))}
        report = {'disk': args.size, 'data': args.data, 'cpus': os.cpu_count(), 'repeat': args.repeat}
        for name, (seconds, sizes) in best.items():
            report[name] = {'seconds': round(seconds, 2), 'sizes': sizes}
        print(json.dumps(report, indent=2))
        print('ratio image_export/reference: %.2f (jobs=1: %.2f)'
              % (best['image_export'][0] / best['reference'][0], best['image_export_jobs1'][0] / best['reference'][0]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
