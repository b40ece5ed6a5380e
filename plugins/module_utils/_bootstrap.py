# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build a bootable Debian disk image without an installer.

mmdebstrap makes the root filesystem as a tarball (kept as a cache keyed by
its inputs); then the disk gets a GPT with a BIOS boot partition, an EFI
system partition and an ext4 root, so one image boots with BIOS and with UEFI.

Facts of build hosts this has to live with (see MACHINE-NOTES):
- the kernel may not scan partition tables of loop devices: ``partx -a`` adds them;
- there is no udev, so grub-mkconfig cannot name the root by UUID: grub.cfg
  is written here, by UUID, and update-grub can replace it inside the guest;
- the host kernel may lack vfat: the ESP is filled with mtools, not mounted.
Every loop device and mount is released on every path (ExitStack), and the
disk only gets its final name once it is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import typing as t
import uuid

from ansible_collections.osimage.builder.plugins.module_utils._daemon import read_json, write_atomic
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, ToolError, ToolMissing
from ansible_collections.osimage.builder.plugins.module_utils._tools import Runner, run_checked

# What every image needs to boot, be reached and be provisioned; the blueprint adds its own.
BASE_PACKAGES = [
    'linux-image-amd64', 'systemd-sysv', 'udev', 'kmod', 'initramfs-tools', 'zstd', 'e2fsprogs', 'dosfstools',
    'ifupdown', 'isc-dhcp-client', 'netbase', 'iproute2', 'openssh-server', 'python3', 'python3-apt', 'cloud-init',
    'sudo', 'tzdata',
    'dbus', 'libpam-systemd', 'ca-certificates', 'procps', 'less', 'grub-pc', 'grub-efi-amd64-bin',
]
HOST_TOOLS = {  # program -> Debian package that provides it
    'mmdebstrap': 'mmdebstrap', 'sfdisk': 'fdisk', 'losetup': 'mount', 'partx': 'util-linux',
    'mkfs.ext4': 'e2fsprogs', 'mkfs.vfat': 'dosfstools', 'mcopy': 'mtools', 'mmd': 'mtools',
    'mount': 'mount', 'umount': 'mount', 'chroot': 'coreutils', 'tar': 'tar',
}
# GPT partition type GUIDs (UEFI spec; "BIOS boot" is GRUB's).
BIOS_BOOT = '21686148-6449-6E6F-744E-656564454649'
ESP = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'
LINUX_FS = '0FC63DAF-8483-4772-8E79-3D69D8477DE4'
GRUB_EFI_MODULES = ['part_gpt', 'part_msdos', 'ext2', 'fat', 'search', 'search_fs_uuid', 'normal', 'configfile',
                    'linux', 'echo', 'all_video', 'gzio', 'efi_gop', 'serial', 'terminal', 'test']
BUILD_APT_CONF = 'etc/apt/apt.conf.d/99osimage-build'
_NS = uuid.UUID('4d6f7d0c-5b8a-4d0e-9a53-6f73696d6167')  # this project's UUID namespace


class Identity(t.NamedTuple):
    disk_guid: str
    root_uuid: str
    esp_id: str  # FAT volume id, 8 hex digits

    @property
    def esp_uuid(self) -> str:
        return '%s-%s' % (self.esp_id[:4].upper(), self.esp_id[4:].upper())


def identity(seed: str) -> Identity:
    """Filesystem and partition-table ids derived from the blueprint's seed: same seed, same ids."""
    return Identity(str(uuid.uuid5(_NS, seed + ':disk')).upper(), str(uuid.uuid5(_NS, seed + ':root')),
                    hashlib.sha256((seed + ':esp').encode()).hexdigest()[:8])


class Request(t.NamedTuple):
    path: str
    size: int
    suite: str
    sources: t.List[str]
    apt_options: t.Dict[str, str]
    packages: t.List[str]
    hostname: str
    kernel_append: str
    seed: str
    cache_dir: str
    cache_max_age: float = 24.0  # hours; an older root filesystem tarball is made again
    source_date_epoch: t.Optional[int] = None


def include_list(extra: t.List[str]) -> t.List[str]:
    seen = []
    for name in BASE_PACKAGES + list(extra):
        if name not in seen:
            seen.append(name)
    return seen


def mmdebstrap_argv(req: Request, tarball: str) -> t.List[str]:
    # mmdebstrap clamps file times to SOURCE_DATE_EPOCH and leaves out what would differ (its manual, "ENVIRONMENT").
    env = [] if req.source_date_epoch is None else ['env', 'SOURCE_DATE_EPOCH=%d' % req.source_date_epoch]
    argv = env + ['mmdebstrap', '--variant=apt', '--mode=root', '--format=tar', '--include=' + ','.join(include_list(req.packages))]
    for key, value in sorted(req.apt_options.items()):
        argv.append('--aptopt=%s "%s"' % (key, value))
    return argv + [req.suite, tarball] + list(req.sources)


def rootfs_key(req: Request) -> str:
    data = {'suite': req.suite, 'sources': req.sources, 'packages': include_list(req.packages),
            'options': req.apt_options}
    if req.source_date_epoch is not None:
        data['source_date_epoch'] = req.source_date_epoch
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def sfdisk_script(ident: Identity) -> str:
    return ('label: gpt\nlabel-id: %s\n'
            'size=1MiB, type=%s, name=bios\n'
            'size=63MiB, type=%s, name=esp\n'
            'type=%s, name=root\n') % (ident.disk_guid, BIOS_BOOT, ESP, LINUX_FS)


def grub_cfg(ident: Identity, kernel_append: str) -> str:
    append = ('console=tty0 console=ttyS0,115200n8 ' + kernel_append).strip()
    return ('serial --unit=0 --speed=115200\n'
            'terminal_input serial console\nterminal_output serial console\n'
            'set timeout=1\n'
            'search --no-floppy --fs-uuid --set=root %s\n'
            "menuentry 'Debian GNU/Linux' {\n"
            '  linux /vmlinuz root=UUID=%s ro %s\n'
            '  initrd /initrd.img\n'
            '}\n') % (ident.root_uuid, ident.root_uuid, append)


def default_grub(kernel_append: str) -> str:
    """/etc/default/grub so that update-grub in the guest keeps the serial console and kernel arguments."""
    append = ('console=tty0 console=ttyS0,115200n8 ' + kernel_append).strip()
    return ('GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=Debian\n'
            'GRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="%s"\n'
            'GRUB_TERMINAL="console serial"\n'
            'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n') % append


# systemd gives an fstab device 90 s to appear. The root filesystem is found by the initramfs (which
# waits longer), but the ESP waits for udev after the switch to the root filesystem: on a host emulating
# several guests at once (TCG), udev got to it after more than 90 s and the boot ended in emergency mode.
ESP_DEVICE_TIMEOUT = '5min'


def fstab(ident: Identity) -> str:
    return ('UUID=%s / ext4 errors=remount-ro 0 1\n'
            'UUID=%s /boot/efi vfat umask=0077,x-systemd.device-timeout=%s 0 1\n'
            ) % (ident.root_uuid, ident.esp_uuid, ESP_DEVICE_TIMEOUT)


class Bootstrap:
    def __init__(self, run: Runner, check_mode: bool = False, log: t.Optional[t.Callable[[str], None]] = None) -> None:
        self.run = run
        self.check_mode = check_mode
        self.log = log or (lambda message: None)
        self.timings: t.Dict[str, float] = {}

    def stamp_path(self, req: Request) -> str:
        return req.path + '.bootstrap.json'

    def inputs(self, req: Request) -> t.Dict[str, t.Any]:
        data = req._asdict()
        data.pop('cache_dir')
        data.pop('cache_max_age')
        return data

    def up_to_date(self, req: Request) -> bool:
        stamp = read_json(self.stamp_path(req))
        return bool(stamp) and os.path.exists(req.path) and stamp.get('inputs') == self.inputs(req)

    def check_host(self) -> None:
        if os.geteuid() != 0:
            raise InvalidInput('debian_bootstrap needs root on the build host for loop devices and mounts; '
                               'run the task with become: true')
        missing = sorted({package for tool, package in HOST_TOOLS.items() if not shutil.which(tool)})
        if missing:
            raise ToolMissing('the build host lacks tools this needs; install the Debian packages: %s'
                              % ', '.join(missing))

    def ensure(self, req: Request) -> t.Dict[str, t.Any]:
        ident = identity(req.seed)
        result: t.Dict[str, t.Any] = {'path': req.path, 'root_uuid': ident.root_uuid, 'esp_uuid': ident.esp_uuid,
                                      'packages': include_list(req.packages), 'sources': req.sources}
        if self.up_to_date(req):
            stamp = read_json(self.stamp_path(req)) or {}
            result.update(changed=False, rootfs=stamp.get('rootfs'), timings=stamp.get('timings', {}))
            return result
        if self.check_mode:
            result.update(changed=True)
            return result
        self.check_host()
        parent = os.path.dirname(os.path.abspath(req.path))
        if not os.path.isdir(parent):
            raise InvalidInput('path: the directory %s does not exist' % parent)
        os.makedirs(req.cache_dir, exist_ok=True)
        tarball = self.rootfs(req)
        partial = os.path.join(parent, '.%s.partial' % os.path.basename(req.path))
        try:
            self.make_disk(req, ident, tarball, partial)
            os.replace(partial, req.path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        rootfs = {'path': tarball, 'sha256': _sha256(tarball)}
        write_atomic(self.stamp_path(req), json.dumps({'inputs': self.inputs(req), 'rootfs': rootfs,
                                                       'timings': self.timings}, indent=2, sort_keys=True))
        result.update(changed=True, rootfs=rootfs, timings=self.timings)
        return result

    def rootfs(self, req: Request) -> str:
        tarball = os.path.join(req.cache_dir, 'rootfs-%s-%s.tar' % (req.suite, rootfs_key(req)))
        if os.path.exists(tarball) and time.time() - os.path.getmtime(tarball) < req.cache_max_age * 3600:
            self.timings['mmdebstrap'] = 0.0
            return tarball
        handle, partial = tempfile.mkstemp(prefix=os.path.basename(tarball) + '.', suffix='.partial', dir=req.cache_dir)
        os.close(handle)
        started = time.monotonic()
        try:
            run_checked(self.run, mmdebstrap_argv(req, partial), 'mmdebstrap')
            os.replace(partial, tarball)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        self.timings['mmdebstrap'] = round(time.monotonic() - started, 1)
        return tarball

    def _run(self, argv: t.List[str], what: str, data: t.Optional[str] = None) -> str:
        if data is None:
            return run_checked(self.run, argv, what)
        rc, out, err = self.run(argv, check_rc=False, data=data, binary_data=False)
        if rc != 0:
            raise ToolError('%s failed (rc %d): %s' % (what, rc, (err or out).strip()), cmd=argv, rc=rc,
                            stdout=out, stderr=err)
        return out

    def make_disk(self, req: Request, ident: Identity, tarball: str, path: str) -> None:
        started = time.monotonic()
        with open(path, 'wb') as handle:
            handle.truncate(req.size)
        self._run(['sfdisk', '--quiet', '--no-reread', '--no-tell-kernel', path], 'sfdisk', sfdisk_script(ident))
        with contextlib.ExitStack() as stack:
            loop = self._run(['losetup', '--find', '--show', '--partscan', path], 'losetup').strip()
            stack.callback(self._run, ['losetup', '--detach', loop], 'losetup --detach')
            if not os.path.exists(loop + 'p3'):
                self._run(['partx', '--add', loop], 'partx')
                stack.callback(self._quiet, ['partx', '--delete', loop])
            _wait_for(loop + 'p3')
            self._run(['mkfs.ext4', '-q', '-F', '-U', ident.root_uuid, '-L', 'root', '-E', 'hash_seed=' + ident.root_uuid,
                       loop + 'p3'], 'mkfs.ext4')
            self._run(['mkfs.vfat', '-n', 'ESP', '-i', ident.esp_id, loop + 'p2'], 'mkfs.vfat')
            mnt = tempfile.mkdtemp(prefix='.root-', dir=os.path.dirname(os.path.abspath(path)))
            stack.callback(os.rmdir, mnt)
            self._run(['mount', loop + 'p3', mnt], 'mount')
            stack.callback(self._run, ['umount', mnt], 'umount')
            self._run(['tar', '-xpf', tarball, '--xattrs', '--xattrs-include=*', '--numeric-owner', '-C', mnt],
                      'tar (unpacking the root filesystem)')
            self.configure(req, ident, mnt)
            for special in ('dev', 'proc', 'sys'):
                target = os.path.join(mnt, special)
                self._run(['mount', '--bind', '/' + special, target], 'mount --bind')
                stack.callback(self._run, ['umount', '--lazy', target], 'umount')
            self._run(['chroot', mnt, 'grub-install', '--target=i386-pc', loop], 'grub-install (BIOS)')
            self.install_efi(ident, mnt, loop + 'p2')
            self._run(['chroot', mnt, 'update-initramfs', '-u', '-k', 'all'], 'update-initramfs')
        self.timings['disk'] = round(time.monotonic() - started, 1)

    def _quiet(self, argv: t.List[str]) -> None:
        self.run(argv, check_rc=False)

    def configure(self, req: Request, ident: Identity, mnt: str) -> None:
        _write(mnt, 'etc/fstab', fstab(ident))
        _write(mnt, 'etc/hostname', req.hostname + '\n')
        _write(mnt, 'etc/hosts', '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n'
               % req.hostname)
        _write(mnt, 'etc/default/grub', default_grub(req.kernel_append))
        _write(mnt, 'boot/grub/grub.cfg', grub_cfg(ident, req.kernel_append))
        _write(mnt, 'etc/network/interfaces', 'source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n')
        os.makedirs(os.path.join(mnt, 'boot/efi'), exist_ok=True)
        # mmdebstrap keeps its --aptopt settings in the image; they are the build host's, not the image's.
        leftover = os.path.join(mnt, 'etc/apt/apt.conf.d/99mmdebstrap')
        if os.path.exists(leftover):
            os.unlink(leftover)
        if req.apt_options:
            # The guest fetches packages during provisioning the way the host does (proxy, snapshot
            # mirrors with expired Release dates); sysprep removes this file again.
            _write(mnt, BUILD_APT_CONF, ''.join('%s "%s";\n' % (key, guest_reachable(value))
                                                for key, value in sorted(req.apt_options.items())))
        # The first boot gets its machine-id from systemd, not from the build.
        _write(mnt, 'etc/machine-id', '')

    def install_efi(self, ident: Identity, mnt: str, esp: str) -> None:
        modules = os.path.join(mnt, 'usr/lib/grub/x86_64-efi')
        target = os.path.join(mnt, 'boot/grub/x86_64-efi')
        os.makedirs(target, exist_ok=True)
        for name in os.listdir(modules):
            if name.endswith(('.mod', '.lst')):
                shutil.copy2(os.path.join(modules, name), target)
        _write(mnt, 'tmp/osimage-early.cfg', 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\n'
               % ident.root_uuid)
        try:
            self._run(['chroot', mnt, 'grub-mkimage', '-O', 'x86_64-efi', '-o', '/tmp/osimage-BOOTX64.EFI',
                       '-p', '/boot/grub', '-c', '/tmp/osimage-early.cfg'] + GRUB_EFI_MODULES, 'grub-mkimage (UEFI)')
            self._run(['mmd', '-i', esp, '::/EFI', '::/EFI/BOOT'], 'mmd')
            self._run(['mcopy', '-i', esp, os.path.join(mnt, 'tmp/osimage-BOOTX64.EFI'), '::/EFI/BOOT/BOOTX64.EFI'],
                      'mcopy')
        finally:
            for name in ('osimage-early.cfg', 'osimage-BOOTX64.EFI'):
                path = os.path.join(mnt, 'tmp', name)
                if os.path.exists(path):
                    os.unlink(path)


def guest_reachable(url: str) -> str:
    """A proxy on the build host's loopback is 10.0.2.2 for a guest on qemu's user network."""
    return re.sub(r'^(\w+://(?:[^@/]*@)?)(localhost|127(?:\.\d+){3}|\[::1\])(?=[:/]|$)', r'\g<1>10.0.2.2', url)


def _write(root: str, relative: str, content: str) -> None:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path):
        os.unlink(path)
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(content)


def _wait_for(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise ToolError('%s did not appear; the kernel did not add the partitions of the loop device' % path)
        time.sleep(0.1)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()
