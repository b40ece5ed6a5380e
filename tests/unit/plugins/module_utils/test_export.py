# -*- coding: utf-8 -*-
from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import shutil

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _export
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, ToolError, ToolMissing
from ansible_collections.osimage.builder.plugins.module_utils._export import (
    CONVERT, KEEP, REHASH, Exporter, ExportRequest, artifact_action, format_sums, hash_file, manifest_text)

MIB = 1024 * 1024
BASE = 'debian-12-1.0.0'
QCOW2 = BASE + '.qcow2'
RAW = BASE + '.raw'


@pytest.fixture(autouse=True)
def qemu_img_on_path(monkeypatch):
    monkeypatch.setattr('shutil.which', lambda name: '/usr/bin/' + name)


@pytest.fixture
def src(tmp_path):
    path = tmp_path / 'disk.raw'
    path.write_bytes(b'\0' * MIB + b'osimage build disk ' * 70000)  # crosses a 1 MiB chunk boundary
    return path


@pytest.fixture
def dest(tmp_path):
    return tmp_path / 'output' / BASE


def converting(run):
    """run, doing to the output file what qemu-img convert would.

    The output is the format's name followed by src, so that each format has its own
    digest; a failing convert leaves a half-written file behind, as a full disk does.
    """
    def call(argv, check_rc=False):
        rc, out, err = run(argv, check_rc)
        if argv[1] == 'convert':
            with open(argv[-1], 'wb') as handle:
                handle.write(b'half-written')
                if rc == 0:
                    handle.seek(0)
                    handle.write(out_format(argv).encode() + b':')
                    with open(argv[-2], 'rb') as source:
                        shutil.copyfileobj(source, handle)
        return rc, out, err
    return call


def ok(count):
    return [(0, '', '')] * count


def request(src, dest, **kwargs):
    kwargs.setdefault('formats', ['qcow2', 'raw'])
    kwargs.setdefault('checksums', ['sha256', 'sha512'])
    kwargs.setdefault('qcow2_compression', 'zlib')
    kwargs.setdefault('src_format', 'raw')
    kwargs.setdefault('manifest', {'blueprint': {'name': 'debian-12', 'version': '1.0.0'}})
    return ExportRequest(src=str(src), dest=str(dest), basename=BASE, **kwargs)


def export(fake_run, replies, req, check_mode=False):
    run = fake_run(replies)
    result = Exporter(converting(run), check_mode=check_mode).export(req)
    return run, result


def snapshot(directory):
    """Every file in directory with its content and mtime."""
    found = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        with open(path, 'rb') as handle:
            found[name] = (handle.read(), os.stat(path).st_mtime_ns)
    return found


def is_partial_of(path, dest, name):
    """qemu-img writes into dest under a hidden temporary name, never the final one."""
    return re.match(re.escape(str(dest)) + '/' + re.escape('.%s.partial-' % name) + '[A-Za-z0-9_]+$', path)


def out_format(argv):
    return argv[argv.index('-O') + 1]


def expected_artifact(src, fmt):
    return fmt.encode() + b':' + src.read_bytes()


def test_first_export_writes_artifacts_sums_manifest(fake_run, src, dest):
    run, result = export(fake_run, ok(2), request(src, dest))

    assert run.calls[0][:-1] == ['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', '-c',
                                 str(src)]
    assert is_partial_of(run.calls[0][-1], dest, QCOW2)
    assert run.calls[1][:-1] == ['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'raw', str(src)]
    assert is_partial_of(run.calls[1][-1], dest, RAW)
    assert len(run.calls) == 2

    qcow2, raw = expected_artifact(src, 'qcow2'), expected_artifact(src, 'raw')
    assert (dest / QCOW2).read_bytes() == qcow2
    assert (dest / RAW).read_bytes() == raw
    assert sorted(os.listdir(dest)) == ['.image_export.json', 'SHA256SUMS', 'SHA512SUMS', QCOW2, RAW,
                                        'manifest.json']
    assert (dest / 'SHA256SUMS').read_text() == '%s  %s\n%s  %s\n' % (
        hashlib.sha256(qcow2).hexdigest(), QCOW2, hashlib.sha256(raw).hexdigest(), RAW)
    assert (dest / 'SHA512SUMS').read_text() == '%s  %s\n%s  %s\n' % (
        hashlib.sha512(qcow2).hexdigest(), QCOW2, hashlib.sha512(raw).hexdigest(), RAW)
    assert json.loads((dest / 'manifest.json').read_text()) == {
        'blueprint': {'name': 'debian-12', 'version': '1.0.0'},
        'artifacts': [
            {'path': QCOW2, 'format': 'qcow2', 'size': len(qcow2),
             'sha256': hashlib.sha256(qcow2).hexdigest(), 'sha512': hashlib.sha512(qcow2).hexdigest()},
            {'path': RAW, 'format': 'raw', 'size': len(raw),
             'sha256': hashlib.sha256(raw).hexdigest(), 'sha512': hashlib.sha512(raw).hexdigest()},
        ]}

    assert result['changed'] is True
    assert result['artifacts'] == [
        {'path': str(dest / QCOW2), 'name': QCOW2, 'format': 'qcow2', 'compress': 'none', 'size': len(qcow2),
         'sha256': hashlib.sha256(qcow2).hexdigest(), 'sha512': hashlib.sha512(qcow2).hexdigest()},
        {'path': str(dest / RAW), 'name': RAW, 'format': 'raw', 'compress': 'none', 'size': len(raw),
         'sha256': hashlib.sha256(raw).hexdigest(), 'sha512': hashlib.sha512(raw).hexdigest()},
    ]
    assert result['checksum_files'] == [str(dest / 'SHA256SUMS'), str(dest / 'SHA512SUMS')]
    assert result['manifest'] == str(dest / 'manifest.json')
    assert result['written'] == [QCOW2, RAW, 'SHA256SUMS', 'SHA512SUMS', 'manifest.json']
    assert result['removed'] == []
    assert result['signature_files'] == []
    assert result['source'] == {'path': str(src), 'format': 'raw', 'size': src.stat().st_size,
                                'virtual_size': src.stat().st_size, 'sha256': hashlib.sha256(src.read_bytes()).hexdigest()}


def test_uncompressed_qcow2_has_no_c(fake_run, src, dest):
    run, _result = export(fake_run, ok(1), request(src, dest, formats=['qcow2'], qcow2_compression='none'))
    assert run.calls[0][:-1] == ['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'compat=1.1', str(src)]


def test_src_format_detected_with_qemu_img_info(fake_run, src, dest):
    info = json.dumps({'format': 'qcow2', 'virtual-size': 1073741824, 'actual-size': 4096})
    run, result = export(fake_run, [(0, info, '')] + ok(1), request(src, dest, formats=['raw'], src_format=None))
    assert run.calls[0] == ['qemu-img', 'info', '--output=json', '-U', str(src)]
    assert run.calls[1][:-1] == ['qemu-img', 'convert', '-q', '-f', 'qcow2', '-O', 'raw', str(src)]
    assert result['source']['format'] == 'qcow2'


def test_artifacts_honour_the_umask(fake_run, src, dest):
    old = os.umask(0o027)
    try:
        export(fake_run, ok(1), request(src, dest, formats=['qcow2']))
    finally:
        os.umask(old)
    assert {name: os.stat(dest / name).st_mode & 0o777 for name in (QCOW2, 'SHA256SUMS', 'manifest.json')} == {
        QCOW2: 0o640, 'SHA256SUMS': 0o640, 'manifest.json': 0o640}


def test_hash_file_reads_once_in_chunks_for_every_digest(tmp_path, monkeypatch):
    path = tmp_path / 'image'
    data = os.urandom(2 * MIB + 12345)
    path.write_bytes(data)
    opened, reads = [], []
    real_open = builtins.open

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def read(self, size):
            reads.append(size)
            return self.handle.read(size)

        def fileno(self):
            return self.handle.fileno()

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return Counting(real_open(file, *args, **kwargs))
    monkeypatch.setattr(builtins, 'open', counting_open)
    digests = hash_file(str(path), ['sha256', 'sha512'], sync=True)
    monkeypatch.undo()
    assert digests == {'sha256': hashlib.sha256(data).hexdigest(), 'sha512': hashlib.sha512(data).hexdigest()}
    assert opened == [str(path)]
    assert reads == [MIB] * 4  # 2 full chunks, the tail, and the empty read at the end


def test_format_sums_is_what_sha256sum_reads():
    assert format_sums([('a.qcow2', 'ab' * 32), ('a.raw', 'cd' * 32)]) == (
        'ab' * 32 + '  a.qcow2\n' + 'cd' * 32 + '  a.raw\n')
    assert format_sums([]) == ''


def test_manifest_keeps_the_callers_keys_in_order_and_adds_artifacts():
    text = manifest_text({'blueprint': {'name': 'x'}, 'inputs': [{'url': 'u', 'sha256': 'f' * 64}]},
                         [{'name': 'x.raw', 'format': 'raw', 'size': 3, 'sha256': 'e' * 64, 'sha512': 'd' * 128,
                           'path': '/abs/x.raw', 'mtime_ns': 1}], ['sha256'])
    assert text.endswith('}\n')
    data = json.loads(text)
    assert list(data) == ['blueprint', 'inputs', 'artifacts']
    assert data['artifacts'] == [{'path': 'x.raw', 'format': 'raw', 'size': 3, 'sha256': 'e' * 64}]


OPTIONS = {'format': 'qcow2', 'src_format': 'raw', 'compress': True}
RECORDED = {'options': OPTIONS, 'size': 100, 'mtime_ns': 7, 'digests': {'sha256': 'a' * 64}}


@pytest.mark.parametrize('recorded, options, on_disk, algorithms, src_unchanged, force, expected', [
    (RECORDED, OPTIONS, (100, 7), ['sha256'], True, False, KEEP),
    (RECORDED, OPTIONS, (100, 7), ['sha256'], True, True, CONVERT),              # force
    (RECORDED, OPTIONS, (100, 7), ['sha256'], False, False, CONVERT),            # src changed
    (None, OPTIONS, (100, 7), ['sha256'], True, False, CONVERT),                 # never exported
    (RECORDED, dict(OPTIONS, compress=False), (100, 7), ['sha256'], True, False, CONVERT),
    (RECORDED, dict(OPTIONS, src_format='qcow2'), (100, 7), ['sha256'], True, False, CONVERT),
    (RECORDED, OPTIONS, None, ['sha256'], True, False, CONVERT),                 # artifact deleted
    (RECORDED, OPTIONS, (99, 7), ['sha256'], True, False, CONVERT),              # truncated
    (RECORDED, OPTIONS, (100, 8), ['sha256'], True, False, CONVERT),             # rewritten by someone
    (RECORDED, OPTIONS, (100, 7), ['sha256', 'sha512'], True, False, REHASH),    # new digest asked for
    (RECORDED, OPTIONS, (100, 7), [], True, False, KEEP),
])
def test_artifact_action(recorded, options, on_disk, algorithms, src_unchanged, force, expected):
    assert artifact_action(recorded, options, on_disk, algorithms, src_unchanged, force) == expected


def test_second_export_changes_nothing(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    before = snapshot(dest)
    run, result = export(fake_run, [], request(src, dest))
    assert run.calls == []
    assert result['changed'] is False
    assert result['written'] == [] and result['removed'] == []
    assert snapshot(dest) == before
    assert [a['sha256'] for a in result['artifacts']] == [
        hashlib.sha256(expected_artifact(src, f)).hexdigest() for f in ('qcow2', 'raw')]
    assert result['artifacts'][0]['size'] == len(expected_artifact(src, 'qcow2'))


def test_new_src_content_of_the_same_size_is_exported_again(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    data = bytearray(src.read_bytes())
    data[5] = 1
    stat = src.stat()
    src.write_bytes(bytes(data))
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p or rsync -t would leave it
    run, result = export(fake_run, ok(2), request(src, dest))
    assert len(run.calls) == 2 and result['changed'] is True
    assert (dest / RAW).read_bytes() == expected_artifact(src, 'raw')


def test_compress_toggle_rewrites_only_qcow2(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    raw_before = snapshot(dest)[RAW]
    run, result = export(fake_run, ok(1), request(src, dest, qcow2_compression='none'))
    assert [out_format(argv) for argv in run.calls] == ['qcow2']
    assert '-c' not in run.calls[0]
    assert result['written'] == [QCOW2]  # same bytes in this fake, so the sums and manifest stay
    assert snapshot(dest)[RAW] == raw_before


@pytest.mark.parametrize('damage', ['delete', 'truncate'])
def test_missing_or_damaged_artifact_is_written_again(fake_run, src, dest, damage):
    export(fake_run, ok(2), request(src, dest))
    if damage == 'delete':
        os.unlink(dest / RAW)
    else:
        os.truncate(dest / RAW, 10)
    run, result = export(fake_run, ok(1), request(src, dest))
    assert [out_format(argv) for argv in run.calls] == ['raw']
    assert RAW in result['written'] and QCOW2 not in result['written']
    assert (dest / RAW).read_bytes() == expected_artifact(src, 'raw')


def test_new_manifest_rewrites_only_manifest(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    before = snapshot(dest)
    run, result = export(fake_run, [], request(src, dest, manifest={'blueprint': {'name': 'debian-12',
                                                                                  'version': '1.0.1'}}))
    after = snapshot(dest)
    assert run.calls == []
    assert result['changed'] is True and result['written'] == ['manifest.json']
    assert {name: after[name] for name in (QCOW2, RAW, 'SHA256SUMS', 'SHA512SUMS')} == {
        name: before[name] for name in (QCOW2, RAW, 'SHA256SUMS', 'SHA512SUMS')}
    data = json.loads(after['manifest.json'][0])
    assert data['blueprint']['version'] == '1.0.1'
    assert [a['path'] for a in data['artifacts']] == [QCOW2, RAW]
    assert export(fake_run, [], request(src, dest, manifest={'blueprint': {'name': 'debian-12', 'version': '1.0.1'}})
                  )[1]['changed'] is False


def test_deleted_sums_file_is_written_again(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    text = (dest / 'SHA512SUMS').read_text()
    os.unlink(dest / 'SHA512SUMS')
    _run, result = export(fake_run, [], request(src, dest))
    assert result['written'] == ['SHA512SUMS']
    assert (dest / 'SHA512SUMS').read_text() == text


def test_asking_for_sha512_later_reads_the_artifacts_without_converting(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest, checksums=['sha256']))
    mtimes = {name: os.stat(dest / name).st_mtime_ns for name in (QCOW2, RAW)}
    run, result = export(fake_run, [], request(src, dest, checksums=['sha256', 'sha512']))
    assert run.calls == []
    assert result['written'] == ['SHA512SUMS', 'manifest.json']
    assert (dest / 'SHA512SUMS').read_text().splitlines()[1] == '%s  %s' % (
        hashlib.sha512(expected_artifact(src, 'raw')).hexdigest(), RAW)
    assert {name: os.stat(dest / name).st_mtime_ns for name in (QCOW2, RAW)} == mtimes
    assert export(fake_run, [], request(src, dest))[1]['changed'] is False


def test_dropping_a_checksum_removes_its_file(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    _run, result = export(fake_run, [], request(src, dest, checksums=['sha256']))
    assert result['removed'] == ['SHA512SUMS'] and result['changed'] is True
    assert not (dest / 'SHA512SUMS').exists()
    assert 'sha512' not in json.loads((dest / 'manifest.json').read_text())['artifacts'][0]


def test_force_writes_everything_again(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    run, result = export(fake_run, ok(2), request(src, dest, force=True))
    assert len(run.calls) == 2
    assert result['written'] == [QCOW2, RAW, 'SHA256SUMS', 'SHA512SUMS', 'manifest.json']


def test_failing_convert_leaves_no_partial_and_keeps_the_old_export(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    before = snapshot(dest)
    src.write_bytes(src.read_bytes() + b'more')
    with pytest.raises(ToolError) as caught:
        export(fake_run, [(1, '', 'qemu-img: error while writing at byte 0: No space left on device\n')],
               request(src, dest))
    assert 'No space left on device' in caught.value.msg
    assert caught.value.context['cmd'][:2] == ['qemu-img', 'convert']
    assert caught.value.context['rc'] == 1
    assert snapshot(dest) == before  # no .partial- file, every old file as it was


def test_failing_second_format_does_not_publish_the_first(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    before = snapshot(dest)
    src.write_bytes(src.read_bytes() + b'more')
    with pytest.raises(ToolError):
        export(fake_run, [(0, '', ''), (1, '', 'qemu-img: Failed to write\n')], request(src, dest))
    assert snapshot(dest) == before


def test_failing_first_export_leaves_an_empty_dest(fake_run, src, dest):
    with pytest.raises(ToolError):
        export(fake_run, [(1, '', 'qemu-img: boom\n')], request(src, dest))
    assert os.listdir(dest) == []


def test_interrupted_export_cleans_up(fake_run, src, dest, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(_export, 'manifest_text', interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(fake_run, ok(2), request(src, dest))
    assert os.listdir(dest) == []


def test_partials_of_a_killed_export_are_removed(fake_run, src, dest):
    dest.mkdir(parents=True)
    (dest / ('.%s.partial-abcd1234' % QCOW2)).write_bytes(b'x')
    (dest / '.other.qcow2.partial-abcd1234').write_bytes(b'x')
    export(fake_run, ok(2), request(src, dest))
    assert '.%s.partial-abcd1234' % QCOW2 not in os.listdir(dest)
    assert '.other.qcow2.partial-abcd1234' in os.listdir(dest)


def test_unreadable_state_means_export_again(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    (dest / '.image_export.json').write_text('{"version": 1, "artifacts": [1, 2]}')
    run, result = export(fake_run, ok(2), request(src, dest))
    assert len(run.calls) == 2 and result['changed'] is True


def test_check_mode_first_export_writes_nothing(fake_run, src, dest):
    run, result = export(fake_run, [], request(src, dest), check_mode=True)
    assert run.calls == []
    assert not dest.exists()
    assert result['changed'] is True
    assert result['written'] == [QCOW2, RAW, 'SHA256SUMS', 'SHA512SUMS', 'manifest.json']
    assert result['artifacts'] == [{'path': str(dest / QCOW2), 'name': QCOW2, 'format': 'qcow2', 'compress': 'none'},
                                   {'path': str(dest / RAW), 'name': RAW, 'format': 'raw', 'compress': 'none'}]


def test_check_mode_reports_a_change_without_making_it(fake_run, src, dest):
    export(fake_run, ok(2), request(src, dest))
    before = snapshot(dest)
    _run, changed = export(fake_run, [], request(src, dest, qcow2_compression="none"), check_mode=True)
    _run, same = export(fake_run, [], request(src, dest), check_mode=True)
    assert changed['changed'] is True and changed['written'] == [QCOW2, 'SHA256SUMS', 'SHA512SUMS', 'manifest.json']
    assert same['changed'] is False and same['written'] == []
    assert snapshot(dest) == before


@pytest.mark.parametrize('kwargs, message', [
    ({'formats': ['qcow2', 'iso']}, "formats[1].format: 'iso' is not supported; supported formats: qcow2, raw, vmdk"),
    ({'formats': []}, 'formats: name at least one of qcow2, raw, vmdk'),
    ({'formats': ['raw', {'format': 'raw'}]}, 'formats[1]: the artifact debian-12-1.0.0.raw is already made by formats[0]'),
    ({'formats': [{'format': 'ova', 'compress': 'zstd'}]},
     'formats[0].compress: ova artifacts cannot be compressed with zstd; they can be: none'),
    ({'formats': [{'format': 'raw', 'qcow2_compression': 'zlib'}]},
     'formats[0].qcow2_compression: only qcow2 and box artifacts hold a qcow2 disk'),
    ({'formats': [{'format': 'raw', 'level': 3}]}, 'formats[0]: unknown key level'),
    ({'formats': [7]}, 'formats[0]: expected a format name or a mapping'),
    ({'compress': 'bzip2'}, "compress: 'bzip2' is not one of none, zstd, xz, gzip"),
    ({'qcow2_compression': 'lz4'}, "qcow2_compression: 'lz4' is not one of none, zlib, zstd"),
    ({'hardware': {'cpus': 0}}, 'hardware.cpus: 0 is not a number of CPUs'),
    ({'hardware': {'memory': '1000000'}}, "hardware.memory: '1000000' is too small"),
    ({'hardware': {'memory': '1025M1'}}, "hardware.memory: '1025M1' is not a size"),
    ({'hardware': {'memory': 1536 * 1024 * 1024 + 1}}, 'hardware.memory: 1610612737 is not a whole number of MiB'),
    ({'hardware': {'firmware': 'coreboot'}}, "hardware.firmware: 'coreboot' is not one of bios, uefi"),
    ({'hardware': {'ram': 1}}, 'hardware: unknown key ram'),
    ({'source_date_epoch': -5}, 'source_date_epoch: -5 is not a number of seconds'),
    ({'jobs': -1}, 'jobs: -1 is not a number of parallel conversions'),
    ({'checksums': ['md5']}, 'checksums: md5 is not supported; supported checksums: sha256, sha512'),
    ({'checksums': []}, 'checksums: name at least one of sha256, sha512'),
    ({'manifest': {'artifacts': []}}, 'manifest: the key "artifacts" is filled in by image_export'),
])
def test_bad_options_fail_before_work(fake_run, src, dest, kwargs, message):
    with pytest.raises(InvalidInput) as caught:
        export(fake_run, [], request(src, dest, **kwargs))
    assert caught.value.msg.startswith(message)
    assert not dest.exists()


@pytest.mark.parametrize('basename', ['', '.hidden', '..', 'a/b', 'a\\b', 'a\nb'])
def test_bad_basename(fake_run, src, dest, basename):
    with pytest.raises(InvalidInput, match='basename: .* is not usable as a file name stem'):
        Exporter(fake_run([])).export(request(src, dest)._replace(basename=basename))


def test_missing_src(fake_run, tmp_path, dest):
    with pytest.raises(InvalidInput, match='src: .*/nope.raw does not exist'):
        export(fake_run, [], request(tmp_path / 'nope.raw', dest))


def test_src_directory(fake_run, tmp_path, dest):
    with pytest.raises(InvalidInput, match='src: .* is a directory, not a disk image'):
        export(fake_run, [], request(tmp_path, dest))


def test_dest_is_a_file(fake_run, src, tmp_path):
    with pytest.raises(InvalidInput, match='dest: .* exists and is not a directory'):
        export(fake_run, [], request(src, src))


def test_dest_not_writable(fake_run, src, dest, monkeypatch):
    dest.mkdir(parents=True)
    monkeypatch.setattr(os, 'access', lambda path, mode: path != str(dest))
    with pytest.raises(InvalidInput, match='dest: the directory .* is not writable by this user'):
        export(fake_run, [], request(src, dest))


def test_dest_cannot_be_created(fake_run, src, tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'access', lambda path, mode: path != str(tmp_path))
    with pytest.raises(InvalidInput, match='dest: .* does not exist and cannot be created: .* is not a writable'):
        export(fake_run, [], request(src, tmp_path / 'a' / 'b'))


def test_src_that_would_be_overwritten(fake_run, tmp_path):
    src = tmp_path / (BASE + '.raw')
    src.write_bytes(b'disk')
    with pytest.raises(InvalidInput, match='src: .* would be overwritten by the export'):
        export(fake_run, [], request(src, tmp_path))


def test_qemu_img_missing(fake_run, src, dest, monkeypatch):
    monkeypatch.setattr('shutil.which', lambda name: None)
    with pytest.raises(ToolMissing, match='qemu-img is not installed on the build host'):
        export(fake_run, [], request(src, dest))
