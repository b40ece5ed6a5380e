# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""wait_gone.py SIGNAL VICTIM TIMEOUT PID...: send SIGNAL to VICTIM, then wait until every PID is gone.

Prints JSON: seconds from the signal to the end of the last PID, and the PIDs left at the timeout.
A zombie (killed, not yet reaped by an init that does not reap) counts as gone.
"""

import json
import os
import signal
import sys
import time


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid, 'r', encoding='ascii', errors='replace') as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return True


def main():
    signum = getattr(signal, 'SIG' + sys.argv[1])
    victim = int(sys.argv[2])
    timeout = float(sys.argv[3])
    pids = [int(arg) for arg in sys.argv[4:]]
    missing = [pid for pid in pids if not alive(pid)]
    began = time.monotonic()
    os.kill(victim, signum)
    gone_at = {}
    while time.monotonic() - began < timeout:
        for pid in pids:
            if pid not in gone_at and not alive(pid):
                gone_at[pid] = round(time.monotonic() - began, 1)
        if len(gone_at) == len(pids):
            break
        time.sleep(0.1)
    left = [pid for pid in pids if pid not in gone_at]
    print(json.dumps({'seconds': max(gone_at.values()) if gone_at else None, 'gone_at': gone_at, 'left': left,
                      'missing_before': missing}))


if __name__ == '__main__':
    main()
