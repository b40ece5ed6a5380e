# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start and stop the test servers of the cloud_upload target on loopback.

    python background.py start STATE_DIR NAME [--lease SECONDS] -- ARGV...
    python background.py stop STATE_DIR NAME
    python background.py stop-all STATE_DIR

``start`` picks a free loopback port, replaces ``{port}`` and ``{dir}`` in ARGV
(``{dir}`` is STATE_DIR/NAME, created empty), starts ARGV in a session of its own
with its output in STATE_DIR/NAME.log, waits until the port accepts connections
and prints {"name", "pid", "port", "url"} as JSON (also kept in STATE_DIR/NAME.json).
A watchdog ends the server after --lease seconds (default 1800) even if nobody
calls ``stop``, so that a killed test run leaves no server behind for long.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log, encoding='utf-8', errors='replace') as handle:
                tail = handle.read()[-3000:]
            sys.exit('server exited with status %s before it listened on port %d:\n%s' % (proc.returncode, port, tail))
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit('server did not listen on port %d within %d s; see %s' % (port, timeout, log))


def start(state_dir: str, name: str, lease: int, argv: list) -> None:
    os.makedirs(state_dir, exist_ok=True)
    stop(state_dir, name)
    workdir = os.path.join(state_dir, name)
    os.makedirs(workdir, exist_ok=True)
    port = free_port()
    argv = [arg.replace('{port}', str(port)).replace('{dir}', workdir) for arg in argv]
    log = os.path.join(state_dir, name + '.log')
    # timeout(1) is the lease: the server is ended after `lease` seconds whatever happens to the test run.
    with open(log, 'wb') as out:
        proc = subprocess.Popen(['timeout', '--kill-after=10', str(lease)] + argv, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir)
    wait_for_port(port, proc, log)
    info = {'name': name, 'pid': proc.pid, 'port': port, 'url': 'http://127.0.0.1:%d' % port}
    with open(os.path.join(state_dir, name + '.json'), 'w', encoding='utf-8') as handle:
        json.dump(info, handle)
    print(json.dumps(info))


def stop(state_dir: str, name: str) -> None:
    path = os.path.join(state_dir, name + '.json')
    try:
        with open(path, encoding='utf-8') as handle:
            pid = json.load(handle)['pid']
    except (OSError, ValueError, KeyError):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
        for _unused in range(50):
            os.killpg(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.unlink(path)


def main() -> None:
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == 'stop-all':
        for entry in sorted(os.listdir(args[1]) if os.path.isdir(args[1]) else []):
            if entry.endswith('.json'):
                stop(args[1], entry[:-len('.json')])
        return
    if len(args) == 3 and args[0] == 'stop':
        stop(args[1], args[2])
        return
    if len(args) >= 5 and args[0] == 'start' and '--' in args:
        split = args.index('--')
        options, argv = args[3:split], args[split + 1:]
        lease = 1800
        if options[:1] == ['--lease'] and len(options) == 2:
            lease = int(options[1])
        elif options:
            sys.exit('unknown options: %s' % ' '.join(options))
        start(args[1], args[2], lease, argv)
        return
    sys.exit(__doc__)


if __name__ == '__main__':
    main()
