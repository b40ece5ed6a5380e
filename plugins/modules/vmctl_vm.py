#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vmctl_vm
short_description: Start, stop, restart and remove OpenBSD vmm VMs through vmctl
version_added: 0.1.0
description:
  - Manages one VM of vmd(8) on an OpenBSD build host with vmctl(8).
  - Reads the VM's state from C(vmctl status); VMs are found by O(name).
  - A VM that vmd does not know is created by C(vmctl start) with the creation options (O(memory), O(disks),
    O(cdrom), O(boot), O(boot_device), O(local_interface), O(interfaces), O(switch), O(template)). vmd forgets such
    a VM when it stops.
  - A VM defined in C(/etc/vm.conf) is always listed, as C(stopped) when it does not run, and is started with a
    plain C(vmctl start NAME); vmd refuses creation options for it, so the module fails before running vmctl if
    any is given (only O(boot) is accepted).
  - The creation options cannot be compared with a running VM, because C(vmctl status) does not show them; a
    running VM counts as started whatever options it was started with. Use O(state=restarted) to apply new ones.
  - Returns the VM's serial console (a pty such as C(/dev/ttyp3)) and, with O(local_interface), the addresses of
    the build host and the guest on the VM's local link.
author:
  - osimage.builder developers (@osimage)
options:
  name:
    description:
      - Name of the VM in vmd, as C(vmctl status) lists it.
      - Letters, digits, C(.), C(-) and C(_), not starting with C(.), C(-) or C(_), at most 63 characters, and not
        digits only (vmctl reads those as a VM id).
    type: str
    required: true
  state:
    description:
      - V(started) starts the VM unless it runs (a paused VM counts as started). A VM that vmd is stopping is
        started again once it is down.
      - V(stopped) asks vmd to stop a running VM (C(vmctl stop)); vmd asks the guest to shut down and turns it off
        after a timeout. With O(await_exit=true) it does not ask, but waits for the VM to end by itself.
      - V(absent) stops the VM as V(stopped) does; vmd then forgets a VM it created with C(vmctl start). A VM defined
        in vm.conf cannot be absent - the module fails and says so.
      - V(restarted) stops the VM (waiting until it is down) if it runs, and starts it again.
    type: str
    choices: [started, stopped, absent, restarted]
    default: started
  memory:
    description:
      - Memory of a new VM, for example V(1G) or V(512M), at least 1 MiB; rounded up to whole MiB as vmctl does.
      - V(K), V(M), V(G) and V(KiB), V(MiB), V(GiB) are powers of 1024; V(kB), V(MB), V(GB) powers of 1000.
      - vmd's default is 512 MiB.
    type: str
  disks:
    description: Disk images of a new VM, in order (at most 4); each is passed as C(-d FORMAT:PATH).
    type: list
    elements: dict
    suboptions:
      path:
        description: Path of the image on the build host.
        type: path
        required: true
      format:
        description:
          - Image format.
          - When not given, V(qcow2) if the file starts with the qcow2 magic, else by the extension C(.qcow2) or
            C(.raw), else V(raw) - as vmctl guesses.
        type: str
        choices: [raw, qcow2]
  cdrom:
    description: ISO image attached to a new VM as a CD-ROM (C(-r)).
    type: path
  boot:
    description:
      - Kernel that vmd loads itself instead of booting the BIOS (C(-b)), for example C(bsd.rd) to run the OpenBSD
        installer. Also accepted for a VM defined in vm.conf.
      - vmd uses it for this boot only; when the guest reboots (and vmd does not end the VM, see O(boot_device)) the
        VM boots from its disk through the BIOS.
    type: path
  boot_device:
    description:
      - Boot device for this boot of a new VM (C(-B)).
      - V(net) needs O(boot) and a network interface; vmd's DHCP server then hands the first interface the file
        name C(auto_install), which starts an unattended OpenBSD install.
      - vmd ends a VM that was started with a boot device when its guest reboots, instead of restarting it - use
        O(state=stopped) with O(await_exit=true) to wait for the end of an install.
    type: str
    choices: [disk, cdrom, net]
  local_interface:
    description:
      - Give a new VM a local interface (C(-L)) - a point-to-point link to the build host with addresses from
        O(local_prefix) and vmd's DHCP server on the host side. It is the VM's first interface.
      - RV(host_address) and RV(guest_address) are its two ends.
    type: bool
    default: false
  interfaces:
    description:
      - Total number of network interfaces of a new VM (C(-i)), 0 to 4.
      - O(local_interface) and O(switch) each add one; interfaces beyond those are attached to no switch.
    type: int
  switch:
    description: Add an interface attached to this switch of vm.conf (C(-n)).
    type: str
  template:
    description:
      - Create the new VM as an instance of this VM of vm.conf (C(-t)); it takes the template's devices, so O(boot),
        O(disks) and O(cdrom) are not needed. Non-root users need C(allow instance) in the template.
    type: str
  local_prefix:
    description:
      - IPv4 prefix that vmd takes local interface addresses from - vm.conf C(local prefix), V(100.64.0.0/10) by
        default. Only used to compute RV(host_address) and RV(guest_address).
    type: str
    default: 100.64.0.0/10
  wait:
    description:
      - With V(started) and V(restarted), wait until C(vmctl status) shows the VM running with a console.
      - With V(stopped) and V(absent), run C(vmctl stop -w), which returns once the VM has stopped.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the VM to run after it was started, for a VM that someone else is stopping to go down,
        and for O(await_exit).
      - C(vmctl stop -w) itself is not limited by it; vmd turns a guest off that does not shut down within its own
        timeouts.
    type: int
    default: 300
  force:
    description: Stop the VM at once (C(vmctl stop -f)) instead of asking the guest to shut down.
    type: bool
    default: false
  await_exit:
    description:
      - With O(state=stopped), do not ask vmd to stop the VM; wait up to O(wait_timeout) seconds until it ends by
        itself, for example at the OpenBSD installer's final reboot when the VM was started with O(boot_device).
      - A VM that vmd created with C(vmctl start) then leaves the status list, a VM of vm.conf shows C(stopped);
        both count as stopped. The task reports no change, as it changed nothing itself.
      - If the VM still runs after O(wait_timeout), the task fails, saying how long it waited and the VM's state.
    type: bool
    default: false
  vmctl:
    description: The vmctl program, by name (searched in E(PATH), then C(/usr/sbin)) or by path.
    type: str
    default: vmctl
  doas:
    description:
      - Run vmctl through C(doas -n), for a build user whose doas.conf(5) rule allows vmctl only, such as
        C(permit nopass builder as root cmd vmctl). Ansible's C(become) cannot use such a rule, since it runs
        the module itself (a Python interpreter) through doas.
      - Creating a VM with options needs root on OpenBSD; starting, stopping and watching a vm.conf VM with an
        C(owner) does not.
    type: bool
    default: false
  lease:
    description:
      - Path of the build's lease (see M(osimage.builder.build_lease)). With O(state=started) or
        O(state=restarted) a small watchdog daemon then runs C(vmctl stop -f) for the VM as soon as the lease was
        not refreshed for O(lease_ttl) seconds - the build that started the VM is gone - and ends when the VM does.
        Its pidfile is C(vmctl-NAME.watchdog.pid) next to the lease.
      - A lease that is missing or already stale is an error.
    type: path
  lease_ttl:
    description: Seconds without a heartbeat after which O(lease) counts as expired.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    description: Runs only C(vmctl status) and reports what would be started or stopped; O(await_exit) does not wait.
  diff_mode:
    support: full
    description: Shows the VM's state in C(vmctl status) before and after.
  platform:
    support: full
    platforms: [posix]
    description: OpenBSD build hosts with vmd running.
notes:
  - vmctl runs as the user the task runs as, and talks to vmd through its socket C(/var/run/vmd.sock).
  - >-
    Creating a VM with options needs root. Either set O(doas=true), which runs C(doas -n vmctl ...) and needs only
    the narrow doas.conf(5) rule C(permit nopass builder as root cmd vmctl) (what the role
    C(osimage.builder.build_host) adds), or run the task with C(become: true) and
    C(become_method: community.general.doas); become runs the module itself through a shell as root
    (C(doas -n -u root /bin/sh -c ...)) and so needs a rule without C(cmd), such as C(permit nopass builder as root).
  - >-
    A VM defined in vm.conf(5) with C(owner builder) can be started and stopped by the user C(builder) without root,
    once C(socket owner :builder) in vm.conf lets the user's group use vmd's socket; see the examples for such a
    vm.conf. vmd reads vm.conf when it starts (C(rcctl restart vmd)) or on C(vmctl reload).
  - >-
    When vmd is not running, vmctl cannot connect (C(connect: /var/run/vmd.sock: No such file or directory)); the
    module says so and suggests C(rcctl enable vmd && rcctl start vmd).
  - >-
    Without O(boot_device), a guest that reboots is restarted by vmd in place (same id and console, new process).
    With O(boot) that second boot is from the disk through the BIOS, which is how the classic C(bsd.rd) install
    boots the installed system.
  - A failure message quotes vmctl's own error line and adds a hint.
seealso:
  - module: osimage.builder.disk_image
  - module: osimage.builder.serial_bootcmd
requirements:
  - vmctl and vmd (OpenBSD base system), with vmd enabled and running
'''

EXAMPLES = r'''
- name: Boot the OpenBSD installer with the build disk and a local interface
  osimage.builder.vmctl_vm:
    name: openbsd-78-build
    boot: /var/lib/osimage/builds/openbsd-78/bsd.rd
    boot_device: net
    disks:
      - path: /var/lib/osimage/builds/openbsd-78/disk.raw
    memory: 1G
    local_interface: true
    doas: true
  register: vm

- name: Show where the guest's response file is fetched from
  ansible.builtin.debug:
    msg: "http://{{ vm.host_address }}/install.conf, console {{ vm.console }}"

- name: Wait until the installer's reboot ends the VM
  osimage.builder.vmctl_vm:
    name: openbsd-78-build
    state: stopped
    await_exit: true
    wait_timeout: 1800
    doas: true

- name: Define a VM that the user builder may start and stop without root (vm.conf(5))
  ansible.builtin.copy:
    dest: /etc/vm.conf
    mode: "0644"
    content: |
      socket owner :builder
      vm "build" {
              disable
              memory 1G
              disk "/var/vm/build.qcow2"
              local interface
              owner builder
      }
  become: true
  become_method: community.general.doas

- name: Start the VM of vm.conf as its owner
  osimage.builder.vmctl_vm:
    name: build

- name: Remove the VM, turning it off at once
  osimage.builder.vmctl_vm:
    name: openbsd-78-build
    state: absent
    force: true
  become: true
  become_method: community.general.doas
'''

RETURN = r'''
watchdog_pid:
  description: Process id of the VM's watchdog (see O(lease)).
  returned: when O(lease) was given, outside check mode
  type: int
vm:
  description:
    - The VM's row of C(vmctl status) after the task, or null when vmd does not list the VM.
    - Sizes are bytes, read from the scaled form vmctl prints (kept in C(maxmem_text) and C(curmem_text)).
    - C(pid), C(curmem), C(curmem_text) and C(tty) are null when the VM does not run.
  returned: always
  type: dict
  contains:
    id:
      description: vmd's id of the VM.
      type: int
    pid:
      description: Process id of the VM's vmd process.
      type: int
    vcpus:
      description: Number of virtual CPUs.
      type: int
    maxmem:
      description: Memory size in bytes.
      type: int
    maxmem_text:
      description: Memory size as vmctl prints it.
      type: str
    curmem:
      description: Memory the guest uses, in bytes.
      type: int
    curmem_text:
      description: Memory the guest uses, as vmctl prints it.
      type: str
    tty:
      description: The console's pty, without C(/dev/).
      type: str
    owner:
      description: Owner as vmctl prints it, C(user) or C(user:group).
      type: str
    state:
      description: V(running), V(paused), V(stopping), V(waiting), V(stopped) or V(unknown).
      type: str
    name:
      description: Name of the VM.
      type: str
  sample:
    id: 1
    pid: 40127
    vcpus: 1
    maxmem: 1073741824
    maxmem_text: 1.0G
    curmem: 258441216
    curmem_text: 247M
    tty: ttyp3
    owner: root
    state: running
    name: openbsd-78-build
console:
  description: Path of the VM's serial console while it runs, for M(osimage.builder.serial_bootcmd) or C(cu -l).
  returned: always
  type: str
  sample: /dev/ttyp3
host_address:
  description: The build host's end of the local interface, the guest's gateway, DHCP and DNS server.
  returned: always; null without O(local_interface) or while the VM does not run
  type: str
  sample: 100.64.1.2
guest_address:
  description: The guest's end of the local interface, which vmd's DHCP server hands it.
  returned: always; null without O(local_interface) or while the VM does not run
  type: str
  sample: 100.64.1.3
cmd:
  description: The vmctl command lines run, in order; repeated polls of C(vmctl status) are listed once.
  returned: always
  type: list
  elements: list
  sample: [["vmctl", "status"], ["vmctl", "start", "-m", "1024M", "-L", "-d", "raw:/var/vm/disk.raw", "build"]]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._vmctl import (
    DEFAULT_LOCAL_PREFIX, VmctlVm, find_binary, normalise, start_watchdog)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            state=dict(type='str', default='started', choices=['started', 'stopped', 'absent', 'restarted']),
            memory=dict(type='str'),
            disks=dict(type='list', elements='dict', options=dict(
                path=dict(type='path', required=True),
                format=dict(type='str', choices=['raw', 'qcow2']),
            )),
            cdrom=dict(type='path'),
            boot=dict(type='path'),
            boot_device=dict(type='str', choices=['disk', 'cdrom', 'net']),
            local_interface=dict(type='bool', default=False),
            interfaces=dict(type='int'),
            switch=dict(type='str'),
            template=dict(type='str'),
            local_prefix=dict(type='str', default=DEFAULT_LOCAL_PREFIX),
            wait=dict(type='bool', default=True),
            wait_timeout=dict(type='int', default=300),
            force=dict(type='bool', default=False),
            await_exit=dict(type='bool', default=False),
            vmctl=dict(type='str', default='vmctl'),
            doas=dict(type='bool', default=False),
            lease=dict(type='path'),
            lease_ttl=dict(type='float', default=60),
        ),
        supports_check_mode=True,
    )
    try:
        spec = normalise(module.params)
        binary = find_binary(module.params['vmctl'])
        run = module.run_command
        prefix = []
        if module.params['doas']:
            doas = module.get_bin_path('doas')
            if not doas:
                module.fail_json(msg='doas: the build host has no doas(1); set doas: false and use become, or run as root')
            prefix = [doas, '-n']

            def run(argv, check_rc=False):  # type: ignore[no-redef]
                return module.run_command([doas, '-n'] + list(argv), check_rc=check_rc)
        result = VmctlVm(run, binary, check_mode=module.check_mode,
                         watchdog=lambda vm_spec: start_watchdog(vm_spec, binary, prefix)).run(spec)
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, **exc.context)
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
