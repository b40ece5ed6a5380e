#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: qemu_vm
short_description: Run a build VM under qemu (KVM, HVF or TCG) with a serial console and QMP
version_added: 0.1.0
description:
  - Starts, stops, restarts or removes one qemu-system VM on the build host.
  - qemu runs detached under a small supervisor; its pidfile, QMP socket, console socket, console log,
    qemu log and exit status are kept in O(work_dir) under the VM's O(name), so builds with different
    work directories never collide. On Linux qemu gets SIGTERM when its supervisor is killed
    (C(PR_SET_PDEATHSIG)), so no qemu outlives it.
  - The serial console is a unix socket by default (or a pty); everything the guest writes on it is also kept
    in RV(console_log), whether or not a client is attached.
  - O(accel=auto) chooses KVM (Linux) or HVF (macOS) only after a tiny probe guest has really run under it
    within O(accel_probe_timeout) seconds, and TCG otherwise. A C(/dev/kvm) that exists but hangs guests
    (nested KVM) therefore falls back to TCG quickly.
  - O(wait=stopped) blocks until the guest powers itself off - the end of an unattended install - and fails at
    once if qemu dies with an error or the console shows one of O(fail_on).
author:
  - osimage.builder developers (@osimage)
options:
  name:
    description:
      - Name of the VM; starts with a letter, then letters, digits, C(.), C(-) or C(_), at most 64 characters.
      - Names the VM's files in O(work_dir).
    type: str
    required: true
  work_dir:
    description:
      - Directory of the VM's runtime files (created with mode 0700 if missing).
      - Unix socket paths are limited to about 100 bytes, so keep it short.
    type: path
    required: true
  state:
    description:
      - V(started) starts the VM unless it is running. A running VM whose configuration differs from the
        options is an error that names the options; use V(restarted) to apply them.
      - V(stopped) presses the ACPI power button and turns the VM off hard after O(stop_timeout) seconds.
      - V(restarted) stops the VM as V(stopped) does, if it runs, and starts it again.
      - V(absent) turns the VM off at once (no ACPI) and removes all its files from O(work_dir).
        Disk images are never removed.
    type: str
    choices: [started, stopped, restarted, absent]
    default: started
  wait:
    description:
      - V(none) returns once qemu runs.
      - V(stopped) then waits until the guest powers itself off (at most O(wait_timeout) seconds). If the VM has
        already run and powered off with the same configuration, the task reports that and does not start it
        again, so an install step can be re-run safely; use O(state=restarted) to run it again.
    type: str
    choices: [none, stopped]
    default: none
  wait_timeout:
    description: Seconds O(wait=stopped) waits.
    type: float
    default: 3600
  stop_timeout:
    description: Seconds to wait after the ACPI power button before turning the VM off hard.
    type: float
    default: 60
  fail_on:
    description:
      - Regular expressions that end O(wait=stopped) at once when they appear on the serial console.
      - The VM is left running for inspection; remove it with O(state=absent).
    type: list
    elements: str
    default: ['Kernel panic - not syncing', '(?m)^panic: ', '(?m)^ddb(\{\d+\})?> ']
  binary:
    description: The qemu-system program.
    type: str
    default: qemu-system-x86_64
  accel:
    description:
      - V(auto) probes KVM (Linux) or HVF (macOS) with a tiny guest and uses TCG when the probe fails.
      - V(kvm), V(hvf) and V(tcg) are used as given.
      - The probe guest is x86; with another O(binary), set O(accel) explicitly.
    type: str
    choices: [auto, kvm, hvf, tcg]
    default: auto
  accel_probe_timeout:
    description: Seconds the accelerator probe guest may take before the accelerator is judged not to work.
    type: float
    default: 8
  start_timeout:
    description: Seconds qemu may take to open its QMP socket after it was started.
    type: float
    default: 30
  cpus:
    description: Number of virtual CPUs.
    type: int
    default: 1
  memory:
    description: Memory size, for example V(1G) or V(512M); rounded up to whole MiB.
    type: str
    default: 1G
  machine:
    description: qemu machine type.
    type: str
    default: q35
  cpu_model:
    description: qemu CPU model; defaults to V(host) under KVM and HVF and V(max) under TCG.
    type: str
  firmware:
    description:
      - V(bios) boots with SeaBIOS; V(uefi) with OVMF, found in the usual places of Debian, Fedora, Arch,
        Homebrew and OpenBSD packages unless O(firmware_code) is given.
      - With V(uefi) the VM gets its own copy of the variable store in O(work_dir).
    type: str
    choices: [bios, uefi]
    default: bios
  firmware_code:
    description: Path of the UEFI code image (for example C(OVMF_CODE_4M.fd)).
    type: path
  firmware_vars:
    description: Path of the UEFI variable store template that matches O(firmware_code).
    type: path
  disks:
    description: Disk images, in order.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Path of the image.
        type: path
        required: true
      format:
        description: Image format; read from the image header when not given.
        type: str
        choices: [raw, qcow2]
      interface:
        description: How the guest sees the disk.
        type: str
        choices: [virtio, ide, scsi, nvme]
        default: virtio
      readonly:
        description: Attach read-only.
        type: bool
        default: false
      cache:
        description: qemu cache mode.
        type: str
        choices: [writeback, none, writethrough, unsafe, directsync]
        default: writeback
  cdrom:
    description: ISO image attached as a CD-ROM.
    type: path
  boot_device:
    description: Boot from the first V(disk), the V(cdrom) or the network (V(net)).
    type: str
    choices: [disk, cdrom, net]
  kernel:
    description: Kernel to boot directly (Linux bzImage or a multiboot kernel).
    type: path
  initrd:
    description: Initial ramdisk for O(kernel).
    type: path
  append:
    description: Kernel command line for O(kernel).
    type: str
  smbios:
    description:
      - >-
        SMBIOS entries, each a mapping with C(type) and its fields, for example
        C({type: 1, serial: "ds=nocloud-net;s=http://10.0.2.2:8000/"}) to hand cloud-init its seed URL.
      - Commas in values are escaped for qemu.
    type: list
    elements: dict
  network:
    description: V(user) gives the guest qemu's user-mode network (host reachable as 10.0.2.2); V(none) no network.
    type: str
    choices: [user, none]
    default: user
  nic_model:
    description: qemu network device model.
    type: str
    default: virtio-net-pci
  ssh_forward:
    description: Forward a host port to the guest's port 22 (needs O(network=user)).
    type: bool
    default: true
  ssh_host_port:
    description: Host port for O(ssh_forward); V(0) picks a free one, returned as RV(ssh_port).
    type: int
    default: 0
  ssh_bind:
    description: Host address the forwarded port listens on.
    type: str
    default: 127.0.0.1
  console:
    description: V(socket) puts the serial console on a unix socket in O(work_dir); V(pty) on a pseudo-terminal.
    type: str
    choices: [socket, pty]
    default: socket
  on_reboot:
    description:
      - V(reboot) lets the guest reboot; V(poweroff) ends the VM when the guest reboots (C(-no-reboot)),
        so an installer's final reboot reads as "stopped".
    type: str
    choices: [reboot, poweroff]
    default: reboot
  lease:
    description:
      - Path of the build's lease (see M(osimage.builder.build_lease)). The VM's supervisor then ends qemu
        (SIGTERM, then SIGKILL after a few seconds) as soon as the lease was not refreshed for O(lease_ttl)
        seconds - the build that started the VM is gone - and records C(lease expired) as the reason.
      - A lease that is missing or already stale is an error when the VM is to be started.
      - Without it the VM runs until it is stopped or powers off, as before.
    type: path
  lease_ttl:
    description: Seconds without a heartbeat after which O(lease) counts as expired.
    type: float
    default: 60
  extra_args:
    description: More qemu arguments, appended as given.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description: Reports what would start, stop or be removed; no probe runs.
  diff_mode:
    support: full
    description: Shows the VM's status before and after.
  platform:
    support: full
    platforms: [posix]
    description: Linux, macOS and OpenBSD build hosts with qemu installed.
requirements:
  - qemu-system (Debian package C(qemu-system-x86))
  - OVMF for O(firmware=uefi) (Debian package C(ovmf))
seealso:
  - module: osimage.builder.disk_image
  - module: osimage.builder.serial_bootcmd
'''

EXAMPLES = r'''
- name: Boot the installer with the build disk
  osimage.builder.qemu_vm:
    name: debian-12-build
    work_dir: /var/tmp/osimage/debian-12
    cpus: 2
    memory: 2G
    disks:
      - path: /var/tmp/osimage/debian-12/disk.qcow2
    cdrom: /var/cache/osimage/debian-12.7.0-amd64-netinst.iso
    boot_device: cdrom
    on_reboot: poweroff
  register: vm

- name: Wait until the installer powers the VM off
  osimage.builder.qemu_vm:
    name: debian-12-build
    work_dir: /var/tmp/osimage/debian-12
    cpus: 2
    memory: 2G
    disks:
      - path: /var/tmp/osimage/debian-12/disk.qcow2
    cdrom: /var/cache/osimage/debian-12.7.0-amd64-netinst.iso
    boot_device: cdrom
    on_reboot: poweroff
    wait: stopped
    wait_timeout: 3600

- name: Boot the installed disk with cloud-init's seed URL in SMBIOS
  osimage.builder.qemu_vm:
    name: debian-12-provision
    work_dir: /var/tmp/osimage/debian-12
    memory: 2G
    disks:
      - path: /var/tmp/osimage/debian-12/disk.qcow2
    smbios:
      - type: 1
        serial: "ds=nocloud-net;s=http://10.0.2.2:8000/"
  register: vm

- name: Connect to the guest through the forwarded port
  ansible.builtin.add_host:
    name: guest
    ansible_host: 127.0.0.1
    ansible_port: "{{ vm.ssh_port }}"

- name: Remove the VM and its runtime files
  osimage.builder.qemu_vm:
    name: debian-12-provision
    work_dir: /var/tmp/osimage/debian-12
    state: absent
'''

RETURN = r'''
name:
  description: Name of the VM.
  returned: always
  type: str
status:
  description: V(running) (or another QMP run state such as V(paused)), V(stopped) or V(absent).
  returned: always
  type: str
pid:
  description: Process id of qemu while it runs.
  returned: always
  type: int
console:
  description: The serial console - a unix socket path, or the pty device with O(console=pty).
  returned: always
  type: str
  sample: /var/tmp/osimage/debian-12/debian-12-build.console
console_log:
  description: File with everything the guest wrote on its serial console since it was started.
  returned: always
  type: str
qmp:
  description: Path of the QMP socket.
  returned: always
  type: str
log:
  description: File with qemu's own output.
  returned: always
  type: str
ssh_port:
  description: Host port forwarded to the guest's port 22.
  returned: when O(ssh_forward) is on and the VM was started
  type: int
  sample: 40711
accel:
  description: The accelerator in use (V(kvm), V(hvf) or V(tcg)).
  returned: when the VM was started
  type: str
  sample: tcg
accel_probe:
  description: What the O(accel=auto) probe found for each accelerator it tried.
  returned: when the VM was started
  type: list
  elements: dict
  sample: [{"accel": "kvm", "ok": false, "seconds": 8.0, "reason": "the probe guest did not finish within 8 s under kvm"}]
host_address:
  description: Address of the build host as the guest sees it (V(10.0.2.2) on user networking).
  returned: always
  type: str
guest_address:
  description: Address qemu's user network gives the guest (V(10.0.2.15)).
  returned: always
  type: str
argv:
  description: The qemu command line.
  returned: when the VM was started
  type: list
  elements: str
exit_status:
  description: qemu's exit status once the VM has stopped (0 when the guest powered off).
  returned: always
  type: int
build_id:
  description: The id of the build whose O(lease) the VM was started with.
  returned: when the VM was started with O(lease)
  type: str
stopped_by:
  description: V(acpi) when the guest shut down after the power button, V(forced) when it was turned off hard.
  returned: when O(state=stopped) stopped the VM
  type: str
console_tail:
  description: Last console lines.
  returned: failure
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._patterns import DEFAULT_FAIL_ON
from ansible_collections.osimage.builder.plugins.module_utils._qemu import (
    QemuVm, QemuVmModule, make_fail_on, normalise)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            work_dir=dict(type='path', required=True),
            state=dict(type='str', default='started', choices=['started', 'stopped', 'restarted', 'absent']),
            wait=dict(type='str', default='none', choices=['none', 'stopped']),
            wait_timeout=dict(type='float', default=3600),
            stop_timeout=dict(type='float', default=60),
            fail_on=dict(type='list', elements='str', default=list(DEFAULT_FAIL_ON)),
            binary=dict(type='str', default='qemu-system-x86_64'),
            accel=dict(type='str', default='auto', choices=['auto', 'kvm', 'hvf', 'tcg']),
            accel_probe_timeout=dict(type='float', default=8),
            start_timeout=dict(type='float', default=30),
            cpus=dict(type='int', default=1),
            memory=dict(type='str', default='1G'),
            machine=dict(type='str', default='q35'),
            cpu_model=dict(type='str'),
            firmware=dict(type='str', default='bios', choices=['bios', 'uefi']),
            firmware_code=dict(type='path'),
            firmware_vars=dict(type='path'),
            disks=dict(type='list', elements='dict', default=[], options=dict(
                path=dict(type='path', required=True),
                format=dict(type='str', choices=['raw', 'qcow2']),
                interface=dict(type='str', default='virtio', choices=['virtio', 'ide', 'scsi', 'nvme']),
                readonly=dict(type='bool', default=False),
                cache=dict(type='str', default='writeback',
                           choices=['writeback', 'none', 'writethrough', 'unsafe', 'directsync']),
            )),
            cdrom=dict(type='path'),
            boot_device=dict(type='str', choices=['disk', 'cdrom', 'net']),
            kernel=dict(type='path'),
            initrd=dict(type='path'),
            append=dict(type='str'),
            smbios=dict(type='list', elements='dict'),
            network=dict(type='str', default='user', choices=['user', 'none']),
            nic_model=dict(type='str', default='virtio-net-pci'),
            ssh_forward=dict(type='bool', default=True),
            ssh_host_port=dict(type='int', default=0),
            ssh_bind=dict(type='str', default='127.0.0.1'),
            console=dict(type='str', default='socket', choices=['socket', 'pty']),
            on_reboot=dict(type='str', default='reboot', choices=['reboot', 'poweroff']),
            extra_args=dict(type='list', elements='str', default=[]),
            lease=dict(type='path'),
            lease_ttl=dict(type='float', default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        spec = normalise(params, sockets=params['state'] in ('started', 'restarted'))
        vm = QemuVm(params['name'], params['work_dir'], spec, check_mode=module.check_mode,
                    probe_timeout=params['accel_probe_timeout'], start_timeout=params['start_timeout'],
                    lease=params['lease'], lease_ttl=params['lease_ttl'])
        before = vm.status()
        runner = QemuVmModule(vm, make_fail_on(params['fail_on']))
        result = runner.run(params['state'], params['wait'], params['wait_timeout'], params['stop_timeout'])
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    if module._diff:
        after = result['status']
        if module.check_mode and result['changed']:
            after = {'started': 'running', 'restarted': 'running', 'stopped': 'stopped',
                     'absent': 'absent'}[params['state']]
        result['diff'] = {'before': {'status': before}, 'after': {'status': after}}
    module.exit_json(**result)


if __name__ == '__main__':
    main()
