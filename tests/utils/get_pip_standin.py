# -*- coding: utf-8 -*-
"""Stand-in for pip's get-pip.py, for ansible-test's --venv mode.

ansible-test bootstraps pip into each virtual environment it creates with a
get-pip.py that it downloads from a host outside the package registries this
project may use. It looks in ~/.ansible/test/cache/get_pip_<version>.py first
(ansible_test/_util/target/setup/requirements.py, bootstrap()), and runs that
file with get-pip.py's command line: pip options and requirement specifiers
such as ``pip==24.2``, plus ``--no-setuptools``/``--no-wheel``. This does the
same with the standard library's ensurepip and then pip from the registry.
"""
from __future__ import annotations

import subprocess
import sys


def main() -> None:
    args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'])
    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet'] + args)


if __name__ == '__main__':
    main()
