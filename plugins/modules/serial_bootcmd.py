#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: serial_bootcmd
short_description: Expect and send over a VM's serial console, with Packer's boot command key grammar
version_added: 0.1.0
description:
  - Connects to the serial console of a VM (qemu, vmd or anything with a serial line), then runs O(steps) in order.
  - A step can wait for a regular expression to appear on the console (C(expect)), type keys (C(send)), or both
    (first expect, then send).
  - C(send) uses Packer's boot command grammar, case-insensitive - C(<enter>), C(<return>), C(<esc>), C(<tab>),
    C(<bs>), C(<del>), C(<spacebar>), C(<insert>), C(<home>), C(<end>), C(<pageUp>), C(<pageDown>), C(<up>),
    C(<down>), C(<left>), C(<right>), C(<f1>) to C(<f12>), C(<wait>) (one second), C(<wait5>), C(<wait1m30s>),
    C(<wait500ms>), and C(<leftCtrlOn>)/C(<leftCtrlOff>), C(<leftAltOn>)/C(<leftAltOff>),
    C(<leftShiftOn>)/C(<leftShiftOff>) (and their C(right) twins).
  - On a serial line special keys are sent as the escape sequences an xterm sends (for example C(<up>) is
    C(ESC [ A), C(<f1>) is C(ESC O P), C(<bs>) is DEL); Ctrl with a letter sends the control character and Alt
    prefixes ESC. Each key is written in one piece, so an escape sequence is never split by O(char_delay).
  - An unknown C(<name>) is an error (with a suggestion), not typed as text.
  - Everything read from the console is appended to O(transcript) and watched for O(fail_on) patterns during
    every step, including while typing and waiting; a match ends the task at once with the last console lines.
  - The console is always released when the module returns, on success and on failure, because qemu's and
    vmd's consoles accept only one client at a time.
author:
  - osimage.builder developers (@osimage)
options:
  console:
    description:
      - Where the console is. A unix socket path (for example the RV(osimage.builder.qemu_vm#module:console)
        that M(osimage.builder.qemu_vm) returns) or C(unix:PATH); a pty or tty device such as C(/dev/pts/3) or
        OpenBSD's C(/dev/ttyp3); C(tcp://HOST:PORT); or any pyserial URL such as C(rfc2217://HOST:PORT).
    type: str
    required: true
  steps:
    description:
      - "The steps, run in order. Each step is a mapping; a plain string is short for C({send: STRING})."
      - C(expect) - a Python regular expression to wait for. Matching starts where the previous match ended.
        Terminal escape sequences are removed from the console text before matching.
      - C(send) - keys to type after the expect (if any) matched.
      - C(timeout) - seconds to wait for C(expect); defaults to O(timeout).
      - C(name) - a label used in results and error messages.
      - C(char_delay) - overrides O(char_delay) for this step.
      - C(secret) - do not show the C(send) text in results and messages. Mark the task C(no_log) as well if
        the secret must not appear in Ansible's own output.
    type: list
    elements: raw
    required: true
  fail_on:
    description:
      - Regular expressions that end the task as soon as they appear on the console.
      - The default catches a Linux kernel panic, an OpenBSD C(panic:) and its C(ddb>) prompt.
      - Set to V([]) to watch for nothing.
    type: list
    elements: str
    default: ['Kernel panic - not syncing', '(?m)^panic: ', '(?m)^ddb(\{\d+\})?> ']
  timeout:
    description: Default seconds an C(expect) step waits.
    type: float
    default: 60
  char_delay:
    description:
      - Seconds between two keys. Installers and boot loaders read serial input slowly; typing too fast loses keys.
      - Console output keeps being read (and watched) during the delay.
    type: float
    default: 0.05
  connect_timeout:
    description: Seconds to keep trying to open the console, for a VM that is still starting.
    type: float
    default: 30
  transcript:
    description: File that everything read from the console is appended to. Its directory must exist.
    type: path
  tail_lines:
    description: How many of the last console lines results and error messages show.
    type: int
    default: 40
  baudrate:
    description: Line speed for real serial devices; ignored by sockets and ptys.
    type: int
    default: 115200
attributes:
  check_mode:
    support: full
    description: Checks every step (regular expressions, key names) but does not connect or type.
  diff_mode:
    support: none
    description: Nothing to show a difference of.
  platform:
    support: full
    platforms: [posix]
    description: Linux, macOS or OpenBSD build hosts.
requirements:
  - pyserial on the build host, for device, tcp and URL consoles (unix sockets need only Python)
seealso:
  - module: osimage.builder.qemu_vm
notes:
  - Matching happens as the console text arrives, so a pattern that ends in a variable-length part such as
    C(\\w+) can match before the guest has printed all of it; end such a pattern with something fixed, such as
    C(\\n) or the prompt's last character.
  - Output the guest printed before the module connected is not seen by C(expect) when the console is a
    socket; M(osimage.builder.qemu_vm) keeps the whole console output in its RV(osimage.builder.qemu_vm#module:console_log).
'''

EXAMPLES = r'''
- name: Answer the OpenBSD installer's first question with autoinstall
  osimage.builder.serial_bootcmd:
    console: "{{ vm.console }}"
    transcript: "{{ build_dir }}/serial.log"
    steps:
      - expect: 'boot> '
        send: "set tty com0<enter>boot<enter>"
      - expect: '\(I\)nstall, \(U\)pgrade, \(A\)utoinstall or \(S\)hell\? '
        timeout: 300
        send: "A<enter>"
      - expect: 'Response file location\? '
        send: "http://{{ vm.host_address }}:{{ server.port }}/install.conf<enter>"

- name: Edit the GRUB entry of a netinstall ISO to add a kickstart URL
  osimage.builder.serial_bootcmd:
    console: "{{ vm.console }}"
    steps:
      - expect: 'Install Fedora'
        send: "<up><wait>e<wait><down><down><end> inst.ks=http://10.0.2.2:8000/ks.cfg<leftCtrlOn>x<leftCtrlOff>"

- name: Wait until the guest is up, failing fast on a panic
  osimage.builder.serial_bootcmd:
    console: "{{ vm.console }}"
    steps:
      - expect: 'login: '
        timeout: 600
    fail_on:
      - 'Kernel panic - not syncing'
      - 'Failed to start .*cloud-init'
'''

RETURN = r'''
matched:
  description: What each expect step matched.
  returned: success
  type: list
  elements: dict
  contains:
    step:
      description: Index of the step.
      type: int
    pattern:
      description: The regular expression.
      type: str
    match:
      description: The matched text.
      type: str
    groups:
      description: The groups of the match.
      type: list
      elements: str
    named:
      description: The named groups of the match.
      type: dict
steps:
  description: Each step with its name and how long it took in seconds.
  returned: always
  type: list
  elements: dict
  sample: [{"step": 0, "name": "expect 'login: '", "seconds": 61.2}]
transcript_tail:
  description: The last O(tail_lines) lines of console output, escape sequences removed.
  returned: always
  type: list
  elements: str
transcript:
  description: Path of the transcript file, when one was given.
  returned: when O(transcript) is set
  type: str
failed_step:
  description: Index of the step that failed.
  returned: failure
  type: int
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.osimage.builder.plugins.module_utils._console import open_console
from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError
from ansible_collections.osimage.builder.plugins.module_utils._expect import ExpectSession, compile_steps
from ansible_collections.osimage.builder.plugins.module_utils._patterns import DEFAULT_FAIL_ON, compile_patterns


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            console=dict(type='str', required=True),
            steps=dict(type='list', elements='raw', required=True),
            fail_on=dict(type='list', elements='str', default=list(DEFAULT_FAIL_ON)),
            timeout=dict(type='float', default=60),
            char_delay=dict(type='float', default=0.05),
            connect_timeout=dict(type='float', default=30),
            transcript=dict(type='path'),
            tail_lines=dict(type='int', default=40),
            baudrate=dict(type='int', default=115200),
        ),
        supports_check_mode=True,
    )
    params = module.params
    result = {'changed': False, 'steps': [], 'matched': [], 'transcript_tail': []}
    if params['transcript']:
        result['transcript'] = params['transcript']
    try:
        steps = compile_steps(params['steps'], params['timeout'])
        fail_on = compile_patterns(params['fail_on'], 'fail_on')
        sends = any(step.actions for step in steps)
        if module.check_mode:
            result['changed'] = sends
            result['steps'] = [{'step': step.index, 'name': step.name} for step in steps]
            module.exit_json(**result)
        transcript = open(params['transcript'], 'ab') if params['transcript'] else None
        try:
            with open_console(params['console'], params['connect_timeout'], params['baudrate']) as console:
                session = ExpectSession(console, fail_on, params['char_delay'], transcript, params['tail_lines'])
                result.update(session.run(steps))
        finally:
            if transcript is not None:
                transcript.close()
    except OsImageError as exc:
        result.update(exc.context)
        module.fail_json(msg=exc.msg, **result)
    except OSError as exc:
        module.fail_json(msg='console %s: %s' % (params['console'], exc), **result)
    result['changed'] = sends
    module.exit_json(**result)


if __name__ == '__main__':
    main()
