# -*- coding: utf-8 -*-
from __future__ import annotations

import re

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _blueprint, _openbsd
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsYpQ9k2m3ZxH8sS3TtNfO2K0Jg2a5yv8b8f8c8d8e8 me@laptop'
KEY2 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsYpQ9k2m3ZxH8sS3TtNfO2K0Jg2a5yv8b8f8c8d8e9 other@laptop'
BUILD_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsYpQ9k2m3ZxH8sS3TtNfO2K0Jg2a5yv8b8f8c8d8eA osimage-build-x'
BCRYPT = '$2b$12$' + 'a' * 53
MINIMAL = {'name': 'openbsd', 'os': 'openbsd-7.8', 'source': {'mirror': 'http://mirror.invalid/pub/OpenBSD'}}


def fake_hash(password, scheme):
    assert scheme == 'bcrypt'
    return BCRYPT


def normalise(**changes):
    raw = dict(MINIMAL)
    raw.update(changes)
    return _blueprint.normalise(raw, fake_hash)


# The questions an autoinstall of OpenBSD 7.8/amd64 on vmd asks, in order, as install.sub (rev 1.1292,
# distrib/miniroot/install.sub) asks them: (question text without the [default], has a default).
# Serial console, one vio0 interface with DHCP, one disk sd0, sets over HTTP, no ftplist (offline).
INSTALL_SUB_78 = [
    ('Terminal type?', True),
    ("System hostname? (short form, e.g. 'foo')", True),
    ("Network interface to configure? (name, lladdr, '?', or 'done')", True),
    ("IPv4 address for vio0? (or 'autoconf' or 'none')", True),
    ("IPv6 address for vio0? (or 'autoconf' or 'none')", True),
    ("Network interface to configure? (name, lladdr, '?', or 'done')", True),
    ('Password for root account?', False),
    ('Public ssh key for root account?', True),
    ('Start sshd(8) by default?', True),
    ('Change the default console to com0?', True),
    ('Which speed should com0 use?', True),
    ("Setup a user? (enter a lower-case loginname, or 'no')", True),
    ('Full name for user puffy?', True),
    ('Password for user puffy?', False),
    ('Public ssh key for user puffy', True),
    ('Allow root ssh login? (yes, no, prohibit-password)', True),
    ("Which disk is the root disk? ('?' for details)", True),
    ('Encrypt the root disk with a (p)assphrase or (k)eydisk?', True),
    ('Use (W)hole disk MBR, whole disk (G)PT or (E)dit?', True),
    ('URL to autopartitioning template for disklabel?', True),
    ("Location of sets? (disk http nfs or 'done')", True),
    ("HTTP proxy URL? (e.g. 'http://proxy:8080', or 'none')", True),
    ("HTTP Server? (hostname or 'done')", False),
    ('Server directory?', True),
    ("Set name(s)? (or 'abort' or 'done')", True),
    ("Set name(s)? (or 'abort' or 'done')", True),
    ('Checksum test for site78.tgz failed. Continue anyway?', True),
    ('Unverified sets: site78.tgz. Continue without verification?', True),
    ("Location of sets? (disk http nfs or 'done')", True),
    ("What timezone are you in? ('?' for list)", False),
]


def autorespond(conf, questions):
    """install.sub _autorespond(): each question takes the first line whose key it contains on word
    boundaries (case-insensitive); the line is used up. Returns {index: answer or None (default)}."""
    lines = conf.splitlines()
    answers = {}
    for index, (question, has_default) in enumerate(questions):
        q = question.lower()
        for number, line in enumerate(lines):
            if not re.match(r'^[^#=].*=\s*\S', line):
                continue
            key = line.split('=', 1)[0].rstrip().lower()
            value = line.split('=', 1)[1].strip()
            if re.search(r'(^|[ \t])' + re.escape(key) + r'([ \t?].*)?$', q):
                answers[index] = value
                del lines[number]
                break
        else:
            if not has_default:
                raise AssertionError('Question has no answer in response file: "%s"' % q)
            answers[index] = None
    assert [line for line in lines if line.strip()] == [], 'unused answers: %r' % lines
    return answers


def test_install_conf_answers_every_question_of_install_sub():
    bp = normalise(users=[{'name': 'puffy', 'password': 'secret', 'ssh_keys': [KEY, KEY2], 'doas': True},
                          {'name': 'root', 'password_hash': BCRYPT}],
                   disklabel=[{'mount': '/', 'size': '2G-*'}], timezone='Europe/Paris', hostname='puffy.example')
    conf = _openbsd.install_conf(bp, BUILD_KEY, '100.64.1.2:41234', '/tok/7.8/amd64/', 'http://100.64.1.2:41234/tok/disklabel')
    got = autorespond(conf, INSTALL_SUB_78)
    asked = {question: got[index] for index, (question, _default) in enumerate(INSTALL_SUB_78)}
    assert asked["System hostname? (short form, e.g. 'foo')"] == 'puffy'
    assert asked['Password for root account?'] == BCRYPT
    assert asked['Public ssh key for root account?'] == BUILD_KEY
    assert asked["Setup a user? (enter a lower-case loginname, or 'no')"] == 'puffy'
    assert asked['Password for user puffy?'] == BCRYPT
    assert asked['Public ssh key for user puffy'] == KEY
    assert asked["HTTP Server? (hostname or 'done')"] == '100.64.1.2:41234'
    assert asked['Server directory?'] == 'tok/7.8/amd64'
    assert asked["What timezone are you in? ('?' for list)"] == 'Europe/Paris'
    assert asked['URL to autopartitioning template for disklabel?'] == 'http://100.64.1.2:41234/tok/disklabel'
    assert asked['Unverified sets: site78.tgz. Continue without verification?'] == 'yes'
    assert asked['Checksum test for site78.tgz failed. Continue anyway?'] == 'yes'
    sets = [got[i] for i, (q, _d) in enumerate(INSTALL_SUB_78) if q.startswith('Set name(s)')]
    assert sets == ['-all bsd bsd.mp bsd.rd base78.tgz comp78.tgz man78.tgz site78.tgz', None]
    locations = [got[i] for i, (q, _d) in enumerate(INSTALL_SUB_78) if q.startswith('Location of sets')]
    assert locations == ['http', 'done']
    # The terminal type and the second interface round take the installer's defaults.
    assert asked['Terminal type?'] is None


def test_install_conf_without_user_or_passwords():
    bp = normalise()
    conf = _openbsd.install_conf(bp, BUILD_KEY, 'h:1', 'd', None)
    questions = [q for q in INSTALL_SUB_78 if 'puffy' not in q[0]]
    got = autorespond(conf, questions)
    asked = {q: got[i] for i, (q, _d) in enumerate(questions)}
    assert asked["Setup a user? (enter a lower-case loginname, or 'no')"] == 'no'
    assert asked['Password for root account?'] == '*************'
    assert asked['URL to autopartitioning template for disklabel?'] == 'none'
    assert asked["What timezone are you in? ('?' for list)"] == 'Etc/UTC'


def test_a_signature_problem_of_the_official_sets_stays_unanswered():
    conf = _openbsd.install_conf(normalise(), BUILD_KEY, 'h:1', 'd', None)
    with pytest.raises(AssertionError, match='Question has no answer'):
        autorespond(conf, [('Directory does not contain SHA256.sig. Continue without verification?', False)])
    with pytest.raises(AssertionError, match='Question has no answer'):
        autorespond(conf, [('Checksum test for base78.tgz failed. Continue anyway?', False)])


def test_install_conf_refuses_line_breaks():
    with pytest.raises(InvalidInput, match='build key: must be one line'):
        _openbsd.install_conf(normalise(), BUILD_KEY + '\nSystem hostname = evil', 'h:1', 'd', None)


def test_disklabel_template_follows_disklabel_8():
    bp = normalise(disklabel=[{'mount': '/', 'size': '1G-2G', 'percent': 10}, {'mount': 'swap', 'size': '256M'},
                              {'mount': '/home', 'size': '1G-*', 'percent': 45}])
    assert _openbsd.disklabel_template(bp['disklabel']) == (
        '/               1G-2G 10%\n'
        'swap            256M\n'
        '/home           1G-* 45%\n')
    assert _openbsd.disklabel_template([]) is None


def test_install_site_readies_the_first_boot():
    bp = normalise(users=[{'name': 'puffy', 'ssh_keys': [KEY, KEY2], 'doas': True},
                          {'name': 'root', 'ssh_keys': [KEY]}])
    site = _openbsd.install_site(bp)
    assert site.startswith('#!/bin/sh\n')
    assert 'echo http://mirror.invalid/pub/OpenBSD > /etc/installurl\n' in site
    assert 'pkg_add -I python3\n' in site
    assert "echo 'permit nopass puffy' >> /etc/doas.conf\n" in site
    assert "echo '%s' >> /root/.ssh/authorized_keys\n" % KEY in site
    assert "echo '%s' >> /home/puffy/.ssh/authorized_keys\n" % KEY2 in site
    assert site.endswith('exit 0\n')


def test_parse_sha256():
    text = ('untrusted comment: verify with openbsd-78-base.pub\n'
            'RWQ' + 'A' * 97 + '\n'
            'SHA256 (bsd) = ' + 'a' * 64 + '\n'
            'SHA256 (base78.tgz) = ' + 'b' * 64 + '\n')
    assert _openbsd.parse_sha256(text) == {'bsd': 'a' * 64, 'base78.tgz': 'b' * 64}
    with pytest.raises(InvalidInput, match='line 1 is not'):
        _openbsd.parse_sha256('SHA256 (bsd) = nothex\n')


def test_index_txt_last_word_is_the_name():
    text = _openbsd.index_txt([('bsd', 100), ('base78.tgz', 2 ** 31)])
    assert [line.split()[-1] for line in text.splitlines()] == ['base78.tgz', 'bsd']


def test_openbsd_blueprint_defaults():
    bp = normalise()
    assert bp['hypervisor'] == 'vmm'
    assert bp['vm']['cpus'] == 1
    assert bp['source']['sets'] == ['bsd', 'bsd.mp', 'bsd.rd', 'base78.tgz', 'comp78.tgz', 'man78.tgz']
    assert bp['source']['signify_key'] == '/etc/signify/openbsd-78-base.pub'
    assert bp['family'] == 'openbsd'


@pytest.mark.parametrize('changes, message', [
    ({'source': {}}, 'source.mirror: is required for openbsd-7.8'),
    ({'hypervisor': 'qemu'}, 'hypervisor: openbsd-7.8 images are built on vmm, not qemu'),
    ({'vm': {'cpus': 2}}, 'vm.cpus: vmm VMs have exactly one vCPU'),
    ({'vm': {'firmware': 'uefi'}}, "vm.firmware: 'uefi' is not a firmware openbsd-7.8 supports"),
    ({'source': {'mirror': 'http://m/pub/OpenBSD', 'sets': ['bsd', 'bsd.rd', 'base77.tgz']}},
     "source.sets[2]: 'base77.tgz' is not a set of OpenBSD 7.8"),
    ({'source': {'mirror': 'http://m/pub/OpenBSD', 'sets': ['bsd', 'base78.tgz']}}, 'source.sets: bsd.rd is missing'),
    ({'source': {'mirror': 'http://m/pub/OpenBSD', 'signify_key': 'key.pub'}}, 'source.signify_key: '),
    ({'source': {'mirror': 'http://m/pub/OpenBSD', 'proxy': 'http://p:3128'}}, 'source.proxy: is a Debian setting'),
    ({'users': [{'name': 'a', 'sudo': True}]}, 'users[0].sudo: openbsd-7.8 images use doas'),
    ({'users': [{'name': 'a'}, {'name': 'b'}]}, 'users: the OpenBSD installer sets up one user'),
    ({'users': [{'name': 'a', 'password_hash': '$6$x$y'}]}, 'users[0].password_hash: OpenBSD takes bcrypt'),
    ({'users': [{'name': 'root', 'doas': True}]}, 'users[0]: root takes only password'),
    ({'locale': 'de_DE.UTF-8'}, 'locale: cannot be set for openbsd-7.8'),
    ({'keyboard': 'de'}, 'keyboard: cannot be set for openbsd-7.8'),
    ({'kernel_append': 'quiet'}, 'kernel_append: cannot be set for openbsd-7.8'),
    ({'disklabel': [{'mount': '/', 'size': 'big'}]}, "disklabel[0].size: 'big' is not a disklabel(8) size"),
    ({'disklabel': [{'mount': 'var', 'size': '1G'}]}, "disklabel[0].mount: 'var' must be a mount point"),
    ({'disklabel': [{'mount': '/var', 'size': '1G'}]}, "disklabel: '/' must be configured"),
    ({'disklabel': [{'mount': '/', 'size': '1G'}, {'mount': '/', 'size': '2G'}]}, 'disklabel[1].mount: / is listed twice'),
    ({'disklabel': [{'mount': '/', 'size': '1G', 'percent': 150}]}, 'disklabel[0].percent: 150 is not a percentage'),
    ({'disklabel': [{'size': '1G'}]}, 'disklabel[0].mount: is required'),
    ({'outputs': [{'format': 'gce'}]}, 'outputs[0].format: openbsd-7.8 images cannot be exported as gce'),
])
def test_openbsd_bad_input_names_the_field(changes, message):
    with pytest.raises(InvalidInput) as info:
        normalise(**changes)
    assert message in info.value.msg


def test_shipped_openbsd_blueprint_is_valid():
    import yaml
    with open('blueprints/openbsd-7.8.yml', encoding='utf-8') as handle:
        bp = _blueprint.normalise(yaml.safe_load(handle)['blueprint'], fake_hash)
    assert bp['os'] == 'openbsd-7.8'
    assert bp['users'][0]['shell'] == '/bin/ksh'
