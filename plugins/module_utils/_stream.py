# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a file and take its digests in the same pass.

An artifact that is produced as a stream (a compressor's output, a tar archive)
goes through a HashingWriter on its way to disk, so its SHA-256/SHA-512 digests
exist the moment it is complete, without reading it back.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import ToolError

CHUNK = 1024 * 1024


class HashingWriter:
    """A binary file opened for writing that digests everything written to it."""

    def __init__(self, path: str, algorithms: t.Sequence[str]) -> None:
        self.path = path
        self.handle = open(path, 'wb')
        self.hashes = [(name, hashlib.new(name)) for name in algorithms]
        self.size = 0

    def write(self, data: bytes) -> int:
        for _name, digest in self.hashes:
            digest.update(data)
        self.handle.write(data)
        self.size += len(data)
        return len(data)

    def close(self) -> t.Dict[str, str]:
        """Flush to disk and return the digests."""
        if not self.handle.closed:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
        return {name: digest.hexdigest() for name, digest in self.hashes}

    def discard(self) -> None:
        if not self.handle.closed:
            self.handle.close()


class HashingReader:
    """Reads a file and digests what was read (for an archive member that is also listed in a manifest)."""

    def __init__(self, path: str, algorithm: str = 'sha256') -> None:
        self.handle = open(path, 'rb')
        self.digest = hashlib.new(algorithm)

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def close(self) -> None:
        self.handle.close()


def hash_file(path: str, algorithms: t.Sequence[str], chunk_size: int = CHUNK,
              sync: bool = False) -> t.Dict[str, str]:
    """All requested digests of one file from a single read of it; optionally fsync it too."""
    hashes = [(name, hashlib.new(name)) for name in algorithms]
    with open(path, 'rb') as handle:
        while True:
            chunk = handle.read(chunk_size)
            if not chunk:
                break
            for _name, digest in hashes:
                digest.update(chunk)
        if sync:
            # fsync flushes the file's dirty pages whichever descriptor asks; qemu-img wrote them.
            os.fsync(handle.fileno())
    return {name: digest.hexdigest() for name, digest in hashes}


def pipeline_to_file(commands: t.Sequence[t.List[str]], out: str, algorithms: t.Sequence[str],
                     stdin_path: t.Optional[str] = None, cwd: t.Optional[str] = None,
                     env: t.Optional[t.Dict[str, str]] = None) -> t.Dict[str, str]:
    """Run ``cmd1 | cmd2 | ...`` with stdin from stdin_path; its output goes to out, digested on the way.

    Every command's exit status is checked; a failure raises ToolError quoting the
    failing command's own stderr, and out is left for the caller to remove.
    """
    procs: t.List[t.Tuple[t.List[str], subprocess.Popen, t.IO[bytes]]] = []
    source: t.Any = open(stdin_path, 'rb') if stdin_path else subprocess.DEVNULL
    writer = HashingWriter(out, algorithms)
    finished = False
    try:
        for argv in commands:
            err = tempfile.TemporaryFile()
            try:
                proc = subprocess.Popen(argv, stdin=source, stdout=subprocess.PIPE, stderr=err, cwd=cwd, env=env)
            except OSError as exc:
                err.close()
                raise ToolError('%s could not be started: %s' % (argv[0], exc.strerror or exc), cmd=argv)
            if source is not subprocess.DEVNULL:
                source.close()  # the child has its own copy; ours would keep the pipe open
            source = proc.stdout
            procs.append((argv, proc, err))
        last = t.cast(t.IO[bytes], procs[-1][1].stdout)
        while True:
            chunk = last.read(CHUNK)
            if not chunk:
                break
            writer.write(chunk)
        last.close()
        digests = writer.close()
        finished = True
    finally:
        writer.discard()
        if source is not subprocess.DEVNULL and not source.closed:
            source.close()
        failures = []
        for argv, proc, err in procs:
            if not finished:
                proc.kill()  # nobody reads its output any more; it would block on a full pipe
            rc = proc.wait()
            if rc != 0:
                err.seek(0)
                failures.append((argv, rc, err.read().decode('utf-8', 'replace')))
            err.close()
    if failures:
        # The first failure in the pipe is the cause; later ones are its broken pipes.
        argv, rc, stderr = failures[0]
        raise ToolError('%s failed (rc %d): %s' % (argv[0], rc, stderr.strip() or 'no output'),
                        cmd=' | '.join(' '.join(c) for c in commands), rc=rc, stderr=stderr)
    return digests
