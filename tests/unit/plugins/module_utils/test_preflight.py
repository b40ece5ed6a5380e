# -*- coding: utf-8 -*-
"""The build host checks made before a build starts anything: each message names the field or the resource."""
from __future__ import annotations

import functools
import http.server
import os
import socket
import threading

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _blueprint, _preflight
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput

GIB = 1024 ** 3


def test_a_directory_to_be_made_below_a_writable_one_passes(tmp_path):
    assert _preflight.check_writable_dir(str(tmp_path / 'out' / 'deeper'), 'osimage_output_dir') == str(tmp_path)


def test_a_path_below_a_regular_file_names_the_file(tmp_path):
    (tmp_path / 'file').write_text('x')
    path = str(tmp_path / 'file' / 'out')
    with pytest.raises(InvalidInput, match='^osimage_output_dir: %s cannot be created: %s is not a directory$'
                       % (path, tmp_path / 'file')):
        _preflight.check_writable_dir(path, 'osimage_output_dir')


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / 'out').write_text('x')
    with pytest.raises(InvalidInput, match='is not a directory$'):
        _preflight.check_writable_dir(str(tmp_path / 'out'), 'osimage_output_dir')


class Statvfs:
    def __init__(self, read_only):
        self.f_flag = os.ST_RDONLY if read_only else 0


@pytest.mark.parametrize('read_only, why', [
    (True, 'is on a read-only file system'),
    (False, 'is not writable by the build user'),
])
def test_an_unwritable_directory_says_why(tmp_path, monkeypatch, read_only, why):
    # root writes through any mode, so access(2) and statvfs(2) are answered here as for another user
    monkeypatch.setattr(os, 'access', lambda path, mode: False)
    monkeypatch.setattr(os, 'statvfs', lambda path: Statvfs(read_only))
    with pytest.raises(InvalidInput) as error:
        _preflight.check_writable_dir(str(tmp_path), 'osimage_output_dir')
    assert str(error.value) == 'osimage_output_dir: %s %s' % (tmp_path, why)
    with pytest.raises(InvalidInput) as error:
        _preflight.check_writable_dir(str(tmp_path / 'out'), 'osimage_output_dir')
    assert str(error.value) == 'osimage_output_dir: %s/out cannot be created: %s %s' % (tmp_path, tmp_path, why)


def test_the_estimate_takes_the_disk_for_an_uncompressed_output_and_half_for_a_compressed_one():
    outputs = [{'format': 'qcow2', 'compress': None, 'qcow2_compression': 'none'},
               {'format': 'qcow2', 'compress': 'zstd', 'qcow2_compression': 'none'},
               {'format': 'raw', 'compress': None, 'qcow2_compression': 'none'},
               {'format': 'box', 'compress': None, 'qcow2_compression': 'zlib'},
               {'format': 'vmdk', 'compress': None, 'qcow2_compression': 'none'},
               {'format': 'gce', 'compress': None, 'qcow2_compression': 'none'},
               {'format': 'ova', 'compress': None, 'qcow2_compression': 'none'},
               {'format': 'vhd', 'compress': None, 'qcow2_compression': 'none'}]
    assert _preflight.output_estimate(4 * GIB, outputs) == [
        ('qcow2', 4 * GIB), ('qcow2.zst', 2 * GIB), ('raw', 4 * GIB), ('box', 2 * GIB), ('vmdk', 2 * GIB),
        ('tar.gz', 2 * GIB), ('ova', 2 * GIB), ('vhd', 4 * GIB)]


def test_too_little_room_gives_the_figures(tmp_path):
    outputs = [{'format': 'qcow2'}, {'format': 'raw', 'compress': 'zstd'}]
    with pytest.raises(InvalidInput) as error:
        _preflight.check_space(str(tmp_path), 'osimage_output_dir', 4 * GIB, outputs, free=1024 ** 2)
    assert str(error.value) == (
        'osimage_output_dir: %s has 1 MiB free, and the outputs may need about 6 GiB (qcow2 4 GiB, raw.zst 2 GiB, '
        'from vm.disk_size 4 GiB); make room, choose another output directory, or skip this estimate with '
        'build_image_check_space: false' % tmp_path)
    assert _preflight.check_space(str(tmp_path), 'f', 4 * GIB, outputs, free=6 * GIB) == {'free': 6 * GIB, 'need': 6 * GIB}


def test_memory_and_disk_beyond_the_host_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match=r'^vm\.memory: 64 GiB is more than the build host has \(8 GiB of memory\)$'):
        _preflight.check_memory(64 * GIB, 'vm.memory', 8 * GIB)
    _preflight.check_memory(64 * GIB, 'vm.memory', None)  # unknown: not refused
    with pytest.raises(InvalidInput, match=r'^vm\.disk_size: 2 TiB is more than the whole file system of the work '
                                           r'directory .*/work holds \(100 GiB\)$'):
        _preflight.check_disk(2048 * GIB, 'vm.disk_size', str(tmp_path / 'work'), total=100 * GIB)
    _preflight.check_disk(4 * GIB, 'vm.disk_size', str(tmp_path / 'work'), total=100 * GIB)


def test_host_memory_is_read():
    assert _preflight.host_memory() > 64 * 1024 ** 2


def test_a_port_in_use_is_named():
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InvalidInput, match='^build_image_ssh_port: port %d on 127.0.0.1 is already in use' % port):
            _preflight.check_port(port, 'build_image_ssh_port')
    _preflight.check_port(port, 'build_image_ssh_port')  # free again
    _preflight.check_port(0, 'build_image_ssh_port')
    with pytest.raises(InvalidInput, match='^p: 70000 is not a TCP port'):
        _preflight.check_port(70000, 'p')


def dead_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # pylint: disable=arguments-differ
        pass


class Mirror:
    """A loopback HTTP server over a directory."""

    def __init__(self, root):
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(root)))
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(tmp_path):
    (tmp_path / 'debian' / 'dists' / 'bookworm').mkdir(parents=True)
    (tmp_path / 'debian' / 'dists' / 'bookworm' / 'Release').write_text('Suite: stable\n')
    served = Mirror(tmp_path)
    yield served
    served.close()


def test_a_mirror_answers_with_release_when_it_has_no_inrelease(mirror):
    urls = [mirror.url + '/debian/dists/bookworm/InRelease', mirror.url + '/debian/dists/bookworm/Release']
    assert _preflight.probe_url(urls, 'source.mirror', '') == urls[1]


def test_a_mirror_without_the_suite_names_the_urls_and_answers(mirror):
    urls = [mirror.url + '/other/dists/bookworm/InRelease', mirror.url + '/other/dists/bookworm/Release']
    with pytest.raises(InvalidInput) as error:
        _preflight.probe_url(urls, 'source.mirror', ' (hint)')
    assert str(error.value) == ('source.mirror: %s answers HTTP 404 File not found; %s answers HTTP 404 File not found '
                                '(hint)' % tuple(urls))


def test_an_unreachable_mirror_names_the_field_and_the_url():
    url = 'http://127.0.0.1:%d/pub/OpenBSD/7.8/amd64/SHA256.sig' % dead_port()
    with pytest.raises(InvalidInput, match='^source.mirror: %s cannot be reached: Connection refused$' % url):
        _preflight.probe_url([url], 'source.mirror', '', timeout=5)
    proxy = 'http://127.0.0.1:%d' % dead_port()
    with pytest.raises(InvalidInput, match='^source.proxy: %s cannot be reached: Connection refused$' % proxy):
        _preflight.check_reachable(proxy, 'source.proxy', timeout=5)


def test_file_mirrors_are_looked_up_on_the_host(tmp_path):
    (tmp_path / 'Release').write_text('')
    assert _preflight.probe_url(['file://%s/Release' % tmp_path], 'source.mirror', '') == 'file://%s/Release' % tmp_path
    with pytest.raises(InvalidInput, match='does not exist'):
        _preflight.probe_url(['file://%s/InRelease' % tmp_path], 'source.mirror', '')


def test_the_mirrors_a_blueprint_names_are_probed_where_the_build_fetches_from():
    obsd = _blueprint.normalise({'name': 't', 'os': 'openbsd-7.8', 'source': {'mirror': 'http://m.example/pub/OpenBSD/'}})
    assert _preflight.mirror_probes(obsd) == [
        ('source.mirror', ['http://m.example/pub/OpenBSD/7.8/amd64/SHA256.sig'],
         ' (source.mirror is the pub/OpenBSD directory of a mirror that has 7.8)')]
    debian = _blueprint.normalise({'name': 't', 'os': 'debian-12', 'source': {
        'mirror': 'http://m.example/debian', 'security_mirror': 'http://s.example/debian-security'}})
    assert [(field, urls) for field, urls, _hint in _preflight.mirror_probes(debian)] == [
        ('source.mirror', ['http://m.example/debian/dists/bookworm/InRelease',
                           'http://m.example/debian/dists/bookworm/Release']),
        ('source.security_mirror', ['http://s.example/debian-security/dists/bookworm-security/InRelease',
                                    'http://s.example/debian-security/dists/bookworm-security/Release'])]
    # the build host's own apt sources are not probed
    assert not _preflight.mirror_probes(_blueprint.normalise({'name': 't', 'os': 'debian-12'}))


def test_a_work_root_too_deep_for_the_vm_sockets_says_how_long_it_may_be():
    root = '/' + 'r' * 78
    _preflight.check_socket_paths(root, root + '/0123456789', ['vm', 'test'], 'build_image_work_root')
    root = '/' + 'r' * 90
    with pytest.raises(InvalidInput) as exc:
        _preflight.check_socket_paths(root, root + '/0123456789', ['vm', 'test'], 'build_image_work_root')
    longest = root + '/0123456789/test.console'
    assert exc.value.msg == ("build_image_work_root: %s is too long: the VM 'test' would have the socket %s, %d bytes, "
                             "and unix socket paths hold at most 103; use a work root at most %d bytes long"
                             % (root, longest, len(longest), 91 - (len(longest) - 103)))
