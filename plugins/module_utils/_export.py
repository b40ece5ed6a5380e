# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""image_export: turn a stopped build disk into artifacts, SHA*SUMS files, signatures and manifest.json.

Everything is written under a temporary name in dest (``.NAME.partial-XXXXXXXX``),
fsynced, and renamed into place only once every file of the export is complete,
so a failure leaves the previous export exactly as it was. Scratch files (an
intermediate raw disk, the members of a tar archive) live in a private
``.osimage-export-XXXXXXXX`` directory in dest that is removed at the end.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils import _sign
from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, ToolError, ToolMissing
from ansible_collections.osimage.builder.plugins.module_utils._formats import (
    COMPRESSIONS, FORMATS, QCOW2_COMPRESSIONS, Hardware, Job, compressor_argv, extension, gnu_tar)
from ansible_collections.osimage.builder.plugins.module_utils._ovf import OS_TYPES
from ansible_collections.osimage.builder.plugins.module_utils._qemu_img import QemuImgTool
from ansible_collections.osimage.builder.plugins.module_utils._sizes import parse_size
from ansible_collections.osimage.builder.plugins.module_utils._stream import hash_file
from ansible_collections.osimage.builder.plugins.module_utils._tools import Runner

STATE_FILE = '.image_export.json'
STATE_VERSION = 2
MANIFEST_FILE = 'manifest.json'
PARTIAL = '.partial-'
SCRATCH = '.osimage-export-'
# The names inside an OVA are URLs to ovftool and must fit a ustar name field (see _ovf).
OVA_NAME_RE = re.compile(r'^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,79}$')

# checksum name -> the file `sha256sum -c` / `sha512sum -c` reads
CHECKSUM_FILES: t.Dict[str, str] = {'sha256': 'SHA256SUMS', 'sha512': 'SHA512SUMS'}

KEEP = 'keep'        # the artifact on disk is what this export would write
REHASH = 'rehash'    # it is, but a newly requested digest has to be read from it
CONVERT = 'convert'  # it has to be (re)written


class Output(t.NamedTuple):
    """One artifact to write: its format, outer compression and qcow2 cluster compression."""
    format: str
    compress: str = 'none'
    qcow2_compression: str = 'none'


class ExportRequest(t.NamedTuple):
    src: str
    dest: str
    basename: str
    # Each entry is a format name, or a dict/Output with format, compress and qcow2_compression;
    # what an entry leaves out comes from compress and qcow2_compression below.
    formats: t.Sequence[t.Any] = ('qcow2',)
    compress: str = 'none'
    checksums: t.Sequence[str] = ('sha256',)
    manifest: t.Optional[t.Dict[str, object]] = None
    force: bool = False
    src_format: t.Optional[str] = None
    qcow2_compression: str = 'none'
    hardware: t.Optional[t.Dict[str, t.Any]] = None
    sign: t.Optional[_sign.SignRequest] = None
    source_date_epoch: t.Optional[int] = None
    jobs: int = 1


class Planned(t.NamedTuple):
    name: str
    output: Output
    options: t.Dict[str, object]
    action: str
    recorded: t.Optional[t.Dict[str, t.Any]]


def _unique(items: t.Iterable[str]) -> t.List[str]:
    seen: t.List[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _choice(field: str, value: t.Any, choices: t.Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidInput('%s: %r is not one of %s' % (field, value, ', '.join(choices)))
    return value


def _output(index: int, entry: t.Any, compress: str, qcow2_compression: str) -> Output:
    field = 'formats[%d]' % index
    if isinstance(entry, str):
        entry = {'format': entry}
    elif isinstance(entry, Output):
        entry = entry._asdict()
    if not isinstance(entry, dict):
        raise InvalidInput('%s: expected a format name or a mapping with format, compress and qcow2_compression, '
                           'got %s' % (field, type(entry).__name__))
    unknown = sorted(set(entry) - set(Output._fields))
    if unknown:
        raise InvalidInput('%s: unknown key %s; known keys: %s' % (field, ', '.join(unknown), ', '.join(Output._fields)))
    fmt = entry.get('format')
    if fmt not in FORMATS:
        raise InvalidInput('%s.format: %r is not supported; supported formats: %s'
                           % (field, fmt, ', '.join(FORMATS)))
    spec = FORMATS[fmt]
    given = entry.get('compress')
    comp = _choice(field + '.compress', given if given is not None else compress, COMPRESSIONS)
    if comp not in spec.compressions:
        if given is None and spec.container:
            comp = spec.compressions[0]  # the module-wide compress is for disk images; archives have their own
        else:
            raise InvalidInput('%s.compress: %s artifacts cannot be compressed with %s; they can be: %s'
                               % (field, fmt, comp, ', '.join(spec.compressions)))
    given = entry.get('qcow2_compression')
    qcomp = _choice(field + '.qcow2_compression', given if given is not None else qcow2_compression,
                    QCOW2_COMPRESSIONS)
    if not spec.uses_qcow2_compression:
        if given not in (None, 'none'):
            raise InvalidInput('%s.qcow2_compression: only qcow2 and box artifacts hold a qcow2 disk' % field)
        qcomp = 'none'
    return Output(fmt, comp, qcomp)


def hardware_of(raw: t.Optional[t.Dict[str, t.Any]]) -> Hardware:
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(Hardware._fields))
    if unknown:
        raise InvalidInput('hardware: unknown key %s; known keys: %s' % (', '.join(unknown), ', '.join(Hardware._fields)))
    hw = Hardware()
    cpus = raw.get('cpus', hw.cpus)
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= 256:
        raise InvalidInput('hardware.cpus: %r is not a number of CPUs from 1 to 256' % (cpus,))
    memory = parse_size(raw.get('memory', hw.memory), 'hardware.memory', minimum=16 * 1024 * 1024)
    if memory % (1024 * 1024):
        raise InvalidInput('hardware.memory: %r is not a whole number of MiB' % (raw.get('memory'),))
    firmware = _choice('hardware.firmware', raw.get('firmware', hw.firmware), ('bios', 'uefi'))
    os_type = _choice('hardware.os_type', raw.get('os_type', hw.os_type), sorted(OS_TYPES))
    description = raw.get('description', hw.description)
    if not isinstance(description, str):
        raise InvalidInput('hardware.description: expected a string')
    return Hardware(cpus, memory, firmware, os_type, description)


def normalise(req: ExportRequest) -> ExportRequest:
    """Check the options that need no filesystem; raise InvalidInput naming the option."""
    compress = _choice('compress', req.compress, COMPRESSIONS)
    qcow2_compression = _choice('qcow2_compression', req.qcow2_compression, QCOW2_COMPRESSIONS)
    if not req.formats:
        raise InvalidInput('formats: name at least one of %s' % ', '.join(FORMATS))
    outputs = [_output(index, entry, compress, qcow2_compression) for index, entry in enumerate(req.formats)]
    seen: t.Dict[str, int] = {}
    for index, output in enumerate(outputs):
        name = extension(output.format, output.compress)
        if name in seen:
            raise InvalidInput('formats[%d]: the artifact %s.%s is already made by formats[%d]'
                               % (index, req.basename, name, seen[name]))
        seen[name] = index
    checksums = _unique(req.checksums or [])
    if not checksums:
        raise InvalidInput('checksums: name at least one of %s' % ', '.join(CHECKSUM_FILES))
    unknown = [c for c in checksums if c not in CHECKSUM_FILES]
    if unknown:
        raise InvalidInput('checksums: %s %s not supported; supported checksums: %s'
                           % (', '.join(unknown), 'is' if len(unknown) == 1 else 'are', ', '.join(CHECKSUM_FILES)))
    base = req.basename or ''
    # The name goes into SHA*SUMS lines, which sha256sum would escape if it held these.
    if (not base or base in ('.', '..') or base.startswith('.')
            or any(c in base for c in '/\\') or any(ord(c) < 32 or ord(c) == 127 for c in base)):
        raise InvalidInput('basename: %r is not usable as a file name stem; use a plain name such as '
                           'debian-12-1.0.0 (no slash, backslash or control character, not starting with a dot)'
                           % base)
    if any(o.format == 'ova' for o in outputs) and not OVA_NAME_RE.match(base):
        raise InvalidInput('basename: %r cannot name the files inside an OVA; use letters, digits, ".", "_", "+" '
                           'and "-" only, at most 80 characters' % base)
    manifest = req.manifest
    if manifest is not None:
        if not isinstance(manifest, dict):
            raise InvalidInput('manifest: must be a dictionary, got %s' % type(manifest).__name__)
        if 'artifacts' in manifest:
            raise InvalidInput('manifest: the key "artifacts" is filled in by image_export; leave it out')
    epoch = req.source_date_epoch
    if epoch is None:
        text = os.environ.get('SOURCE_DATE_EPOCH', '0') or '0'
        if not text.isdigit():
            raise InvalidInput('source_date_epoch: the environment variable SOURCE_DATE_EPOCH=%r is not a number '
                               'of seconds' % text)
        epoch = int(text)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 2 ** 32:
        raise InvalidInput('source_date_epoch: %r is not a number of seconds since 1970 (0 to 4294967295)' % (epoch,))
    if isinstance(req.jobs, bool) or not isinstance(req.jobs, int) or req.jobs < 0:
        raise InvalidInput('jobs: %r is not a number of parallel conversions (0 means one per CPU)' % (req.jobs,))
    return req._replace(formats=outputs, checksums=checksums, manifest=manifest, compress=compress,
                        qcow2_compression=qcow2_compression, source_date_epoch=epoch,
                        hardware=hardware_of(req.hardware)._asdict())


def artifact_name(basename: str, output: Output) -> str:
    return '%s.%s' % (basename, extension(output.format, output.compress))


def format_sums(entries: t.Iterable[t.Tuple[str, str]]) -> str:
    """(file name, hex digest) pairs as `sha256sum -c` reads them: ``<hex>  <name>``."""
    return ''.join('%s  %s\n' % (digest, name) for name, digest in entries)


def manifest_text(manifest: t.Optional[t.Dict[str, object]], artifacts: t.Sequence[t.Dict[str, object]],
                  algorithms: t.Sequence[str]) -> str:
    data = dict(manifest or {})
    entries = []
    for artifact in artifacts:
        entry = {'path': artifact['name'], 'format': artifact['format']}
        if artifact.get('compress', 'none') != 'none':
            entry['compress'] = artifact['compress']
        entry['size'] = artifact['size']
        entry.update((algo, artifact[algo]) for algo in algorithms)
        entries.append(entry)
    data['artifacts'] = entries
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + '\n'


def artifact_action(recorded: t.Optional[t.Dict[str, t.Any]], options: t.Dict[str, object],
                    on_disk: t.Optional[t.Tuple[int, int]], algorithms: t.Sequence[str],
                    src_unchanged: bool, force: bool) -> str:
    """Whether one artifact can stay as it is.

    recorded is what the state file says was written last time, on_disk the file's
    (size, mtime_ns) now or None when it is missing.
    """
    if force or not src_unchanged or not recorded:
        return CONVERT
    if recorded.get('options') != options:
        return CONVERT
    if on_disk is None or on_disk != (recorded.get('size'), recorded.get('mtime_ns')):
        return CONVERT
    if any(algo not in (recorded.get('digests') or {}) for algo in algorithms):
        return REHASH
    return KEEP


def load_state(dest: str) -> t.Dict[str, t.Any]:
    """The state file of the last export into dest, or {} when there is none worth trusting."""
    try:
        with open(os.path.join(dest, STATE_FILE), 'rb') as handle:
            data = json.loads(handle.read().decode('utf-8'))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get('version') != STATE_VERSION:
        return {}
    # A state file edited by hand must not crash the export, only cost a re-export.
    if (not isinstance(data.get('src'), dict) or not isinstance(data.get('artifacts'), dict)
            or not all(isinstance(a, dict) for a in data['artifacts'].values())
            or not isinstance(data.get('checksum_files'), list)):
        return {}
    return data


def _size_mtime(path: str) -> t.Optional[t.Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _read_text(path: str) -> t.Optional[str]:
    try:
        with open(path, 'rb') as handle:
            return handle.read().decode('utf-8')
    except (OSError, UnicodeDecodeError):
        return None


def _default_mode() -> int:
    # mkstemp creates files 0600; artifacts are meant to be shared, so honour the umask instead.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the renames are still done
    finally:
        os.close(fd)


class Staging:
    """Files written under temporary names in dest and renamed into place all together."""

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self.pending: t.List[t.Tuple[str, str]] = []

    def new(self, name: str) -> str:
        fd, tmp = tempfile.mkstemp(prefix='.%s%s' % (name, PARTIAL), dir=self.dest)
        self.pending.append((tmp, os.path.join(self.dest, name)))
        try:
            os.fchmod(fd, _default_mode())
        finally:
            os.close(fd)
        return tmp

    def write_text(self, name: str, text: str) -> str:
        tmp = self.new(name)
        with open(tmp, 'wb') as handle:
            handle.write(text.encode('utf-8'))
            handle.flush()
            os.fsync(handle.fileno())
        return tmp

    def commit(self) -> None:
        for tmp, final in self.pending:
            os.rename(tmp, final)
        self.pending = []
        _fsync_dir(self.dest)

    def abort(self) -> None:
        for tmp, _final in self.pending:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self.pending = []


def remove_stale_partials(dest: str, names: t.Iterable[str]) -> t.List[str]:
    """Temporaries and scratch directories that a killed export of these names left behind.

    Only called with dest's lock held, so no other export is using them.
    """
    prefixes = tuple('.%s%s' % (name, PARTIAL) for name in names)
    removed = []
    for entry in sorted(os.listdir(dest)):
        path = os.path.join(dest, entry)
        try:
            if entry.startswith(prefixes):
                os.unlink(path)
            elif entry.startswith(SCRATCH) and os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                continue
            removed.append(entry)
        except OSError:
            pass
    return removed


def check_paths(src: str, dest: str, output_names: t.Iterable[str]) -> None:
    if not os.path.exists(src):
        raise InvalidInput('src: %s does not exist' % src)
    if os.path.isdir(src):
        raise InvalidInput('src: %s is a directory, not a disk image' % src)
    if not os.access(src, os.R_OK):
        raise InvalidInput('src: %s is not readable by this user' % src)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise InvalidInput('dest: %s exists and is not a directory' % dest)
    if os.path.isdir(dest):
        if not os.access(dest, os.W_OK | os.X_OK):
            raise InvalidInput('dest: the directory %s is not writable by this user' % dest)
    else:
        parent = os.path.dirname(dest)
        while parent and not os.path.lexists(parent) and parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise InvalidInput('dest: %s does not exist and cannot be created: %s is not a writable directory'
                               % (dest, parent))
    real_src = os.path.realpath(src)
    for name in output_names:
        if os.path.realpath(os.path.join(dest, name)) == real_src:
            raise InvalidInput('src: %s would be overwritten by the export (it is %s in dest); '
                               'choose another dest or basename' % (src, name))


def _signature_names() -> t.Set[str]:
    return {_sign.signature_name(tool, sums) for tool in _sign.TOOLS for sums in CHECKSUM_FILES.values()}


def _key_digest(req: _sign.SignRequest) -> str:
    """Identifies the key in the state file, so that a new key signs again; the key itself is not kept."""
    if req.key_file:
        with open(req.key_file, 'rb') as handle:
            material = handle.read()
    else:
        material = os.environ.get(t.cast(str, req.key_env), '').encode('utf-8')
    return hashlib.sha256(b'osimage.builder signing key\0' + material).hexdigest()


class Exporter:
    def __init__(self, run: Runner, check_mode: bool = False, binary: str = 'qemu-img') -> None:
        self.run = run
        self.check_mode = check_mode
        self.qemu_img = QemuImgTool(run, binary)

    def _tools(self, outputs: t.Sequence[Output]) -> t.Dict[str, t.List[str]]:
        """Every program the requested formats need, found before any work starts."""
        binary = self.qemu_img.binary
        if not shutil.which(binary) and not os.path.isfile(binary):
            raise ToolMissing('%s is not installed on the build host; install qemu-utils (Debian) or qemu' % binary)
        tools: t.Dict[str, t.List[str]] = {}
        for output in outputs:
            needed = [output.compress] if output.compress != 'none' else []
            if output.format == 'gce':
                needed.append('gzip')
            for name in needed:
                if name not in tools:
                    tools[name] = compressor_argv(name)
            if output.format in ('gce', 'box') and 'tar' not in tools:
                tools['tar'] = [gnu_tar(output.format)]
        return tools

    def export(self, req: ExportRequest) -> t.Dict[str, t.Any]:
        req = normalise(req)
        outputs = t.cast(t.List[Output], list(req.formats))
        src = os.path.abspath(req.src)
        dest = os.path.abspath(req.dest)
        names = [artifact_name(req.basename, output) for output in outputs]
        sums_names = [CHECKSUM_FILES[algo] for algo in req.checksums]
        sig_names = [_sign.signature_name(req.sign.tool, name) for name in sums_names] if req.sign else []
        check_paths(src, dest, names + sums_names + sig_names + [MANIFEST_FILE, STATE_FILE])
        tools = self._tools(outputs)
        sign_binary = _sign.check(req.sign, os.environ) if req.sign else None
        key_digest = _key_digest(req.sign) if req.sign else None

        lock = None
        if not self.check_mode:
            os.makedirs(dest, exist_ok=True)
            lock = self._lock(dest)
        try:
            return self._export(req, outputs, src, dest, names, sums_names, sig_names, tools, sign_binary, key_digest)
        except OSError as exc:
            # a full or vanished output directory, an unreadable scratch file
            raise ToolError('writing into %s failed: %s' % (dest, exc))
        finally:
            if lock is not None:
                os.close(lock)

    @staticmethod
    def _lock(dest: str) -> int:
        # The directory itself is locked, so that no lock file is left in it.
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InvalidInput('dest: another image_export is writing into %s right now; give each build its own '
                               'output directory' % dest)
        return fd

    def _export(self, req: ExportRequest, outputs: t.List[Output], src: str, dest: str, names: t.List[str],
                sums_names: t.List[str], sig_names: t.List[str], tools: t.Dict[str, t.List[str]],
                sign_binary: t.Optional[str], key_digest: t.Optional[str]) -> t.Dict[str, t.Any]:
        src_stat = os.stat(src)
        if req.src_format == 'raw':
            src_format, virtual_size = 'raw', src_stat.st_size
        else:
            src_info = self.qemu_img.info(src)
            src_format, virtual_size = req.src_format or src_info.format, src_info.virtual_size
        self._checked_sizes(outputs, virtual_size)
        state = load_state(dest) if os.path.isdir(dest) else {}
        recorded_src = state.get('src') or {}
        src_sha256: t.Optional[str] = None
        src_unchanged = False
        # Reading src is the price of knowing it is unchanged: a size/mtime match proves nothing
        # about a disk that was copied with its times kept, and a stale artifact is the worst outcome.
        if not req.force and state and recorded_src.get('size') == src_stat.st_size:
            src_sha256 = hash_file(src, ['sha256'])['sha256']
            src_unchanged = src_sha256 == recorded_src.get('sha256')

        hardware = t.cast(t.Dict[str, t.Any], req.hardware)
        recorded_artifacts = state.get('artifacts') or {}
        plans = []
        for output, name in zip(outputs, names):
            spec = FORMATS[output.format]
            options: t.Dict[str, object] = {'format': output.format, 'src_format': src_format,
                                            'compress': output.compress, 'qcow2_compression': output.qcow2_compression}
            if spec.uses_hardware:
                options['hardware'] = hardware
            if spec.container or output.format == 'vhd':
                options['mtime'] = req.source_date_epoch
            recorded = recorded_artifacts.get(name)
            action = artifact_action(recorded, options, _size_mtime(os.path.join(dest, name)),
                                     req.checksums, src_unchanged, req.force)
            plans.append(Planned(name, output, options, action, recorded))

        converting = any(p.action == CONVERT for p in plans)
        written: t.List[str] = []
        removed: t.List[str] = []
        staging = Staging(dest)
        scratch: t.List[str] = []
        try:
            if converting and not self.check_mode:
                remove_stale_partials(dest, names)
                if src_sha256 is None:
                    src_sha256 = hash_file(src, ['sha256'])['sha256']
            context = dict(src=src, src_format=src_format, virtual_size=virtual_size,
                           src_sha256=src_sha256 or '', basename=req.basename,
                           hardware=Hardware(**hardware), mtime=req.source_date_epoch,
                           algorithms=req.checksums, tools=tools)
            artifacts = self._artifacts(plans, dest, context, staging, scratch, req.jobs)
            written.extend(p.name for p in plans if p.action == CONVERT)

            sums_texts: t.List[t.Tuple[str, str]] = []
            staged: t.Dict[str, str] = {}
            if converting and self.check_mode:
                # The new digests are unknown, so every checksum file, signature and the manifest would change.
                written.extend(sums_names + sig_names + [MANIFEST_FILE])
            else:
                sums_texts = [(CHECKSUM_FILES[algo], format_sums((a['name'], a[algo]) for a in artifacts))
                              for algo in req.checksums]
                texts = sums_texts + [(MANIFEST_FILE, manifest_text(req.manifest, artifacts, req.checksums))]
                for name, text in texts:
                    if req.force or _read_text(os.path.join(dest, name)) != text:
                        written.append(name)
                        if not self.check_mode:
                            staged[name] = staging.write_text(name, text)
            signatures = self._signatures(req, dest, state, sums_texts, staged, written, staging,
                                          sign_binary, key_digest)

            # Only checksum files and signatures this module wrote before, and only by their fixed names.
            removed = [name for name in state.get('checksum_files') or []
                       if name in CHECKSUM_FILES.values() and name not in sums_names
                       and os.path.lexists(os.path.join(dest, name))]
            removed += [name for name in sorted(state.get('signatures') or {})
                        if name in _signature_names() and name not in sig_names
                        and os.path.lexists(os.path.join(dest, name))]

            if (written or removed) and not self.check_mode:
                staging.write_text(STATE_FILE, self._state_text(
                    src, src_stat, t.cast(str, src_sha256), req, plans, artifacts, sums_names, signatures))
                staging.commit()
                for name in removed:
                    os.unlink(os.path.join(dest, name))
        except BaseException:
            staging.abort()
            raise
        finally:
            for path in scratch:
                shutil.rmtree(path, ignore_errors=True)

        for artifact in artifacts:
            artifact.pop('mtime_ns', None)
        source: t.Dict[str, object] = {'path': src, 'format': src_format, 'size': src_stat.st_size,
                                       'virtual_size': virtual_size}
        if src_sha256:
            source['sha256'] = src_sha256
        return {
            'changed': bool(written or removed),
            'dest': dest,
            'artifacts': artifacts,
            'checksum_files': [os.path.join(dest, name) for name in sums_names],
            'signature_files': [os.path.join(dest, name) for name in sig_names],
            'manifest': os.path.join(dest, MANIFEST_FILE),
            'written': written,
            'removed': removed,
            'source': source,
        }

    def _artifacts(self, plans: t.Sequence[Planned], dest: str, context: t.Dict[str, t.Any], staging: Staging,
                   scratch: t.List[str], jobs: int) -> t.List[t.Dict[str, t.Any]]:
        """One result per plan, in order; conversions run `jobs` at a time (0: one per CPU)."""
        converts = [p for p in plans if p.action == CONVERT]
        workers = min(len(converts), jobs or os.cpu_count() or 1)
        # Temporary names are taken here, in plan order, so that they exist before any thread starts.
        targets: t.Dict[str, t.Tuple[str, str]] = {}
        if not self.check_mode:
            for plan in converts:
                work = tempfile.mkdtemp(prefix=SCRATCH, dir=dest)
                scratch.append(work)
                targets[plan.name] = (staging.new(plan.name), work)

        def one(plan: Planned) -> t.Dict[str, t.Any]:
            return self._artifact(plan, dest, context, targets.get(plan.name))

        if workers <= 1:
            return [one(plan) for plan in plans]
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(one, plan) for plan in plans]
            # The first failure ends the export: conversions not yet started are not started.
            concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
            pool.shutdown(wait=True, cancel_futures=True)
        for future in futures:
            if future.cancelled():
                continue
            error = future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]

    def _checked_sizes(self, outputs: t.Sequence[Output], virtual_size: int) -> None:
        if virtual_size % 512 and any(FORMATS[o.format].uses_hardware for o in outputs):
            raise InvalidInput('src: its virtual size %d is not a whole number of 512-byte sectors, which OVF and '
                               'Vagrant disks must be' % virtual_size)

    def _artifact(self, plan: Planned, dest: str, context: t.Dict[str, t.Any],
                  target: t.Optional[t.Tuple[str, str]]) -> t.Dict[str, t.Any]:
        path = os.path.join(dest, plan.name)
        output = plan.output
        artifact: t.Dict[str, t.Any] = {'path': path, 'name': plan.name, 'format': output.format,
                                        'compress': output.compress}
        algorithms = context['algorithms']
        if plan.action == CONVERT:
            if target is None:
                return artifact  # check mode: size and digests are only known once it is written
            tmp, work = target
            job = Job(qemu_img=self.qemu_img, out=tmp, work=work, compress=output.compress,
                      qcow2_compression=output.qcow2_compression, **context)
            digests = FORMATS[output.format].write(job)
            if digests is None:
                digests = hash_file(tmp, algorithms, sync=True)
            size, mtime_ns = t.cast(t.Tuple[int, int], _size_mtime(tmp))
        elif plan.action == REHASH:
            digests = hash_file(path, algorithms)
            size, mtime_ns = t.cast(t.Tuple[int, int], _size_mtime(path))
        else:
            recorded = t.cast(t.Dict[str, t.Any], plan.recorded)
            digests = {algo: recorded['digests'][algo] for algo in algorithms}
            size, mtime_ns = recorded['size'], recorded['mtime_ns']
        artifact.update(size=size, mtime_ns=mtime_ns, **digests)
        return artifact

    def _signatures(self, req: ExportRequest, dest: str, state: t.Dict[str, t.Any],
                    sums_texts: t.Sequence[t.Tuple[str, str]], staged: t.Dict[str, str], written: t.List[str],
                    staging: Staging, sign_binary: t.Optional[str],
                    key_digest: t.Optional[str]) -> t.Dict[str, t.Dict[str, t.Any]]:
        """Sign each checksum file whose content, signing tool or key changed; returns the state to record."""
        if not req.sign:
            return {}
        sign = req.sign
        recorded_all = state.get('signatures') or {}
        records: t.Dict[str, t.Dict[str, t.Any]] = {}
        for sums_name, text in sums_texts:
            sig_name = _sign.signature_name(sign.tool, sums_name)
            wanted = {'signed_sha256': hashlib.sha256(text.encode('utf-8')).hexdigest(), 'tool': sign.tool,
                      'key_sha256': key_digest}
            recorded = recorded_all.get(sig_name) if isinstance(recorded_all, dict) else None
            on_disk = _size_mtime(os.path.join(dest, sig_name))
            fresh = (not req.force and isinstance(recorded, dict)
                     and all(recorded.get(k) == v for k, v in wanted.items())
                     and on_disk == (recorded.get('size'), recorded.get('mtime_ns')))
            if fresh:
                records[sig_name] = t.cast(t.Dict[str, t.Any], recorded)
                continue
            if sig_name not in written:
                written.append(sig_name)
            if self.check_mode:
                continue
            signed = staged.get(sums_name) or os.path.join(dest, sums_name)
            tmp = staging.new(sig_name)
            _sign.sign(sign, signed, tmp, self.run, os.environ, t.cast(str, sign_binary))
            size, mtime_ns = t.cast(t.Tuple[int, int], _size_mtime(tmp))
            records[sig_name] = dict(wanted, size=size, mtime_ns=mtime_ns)
        return records

    @staticmethod
    def _state_text(src: str, src_stat: os.stat_result, src_sha256: str, req: ExportRequest,
                    plans: t.Sequence[Planned], artifacts: t.Sequence[t.Dict[str, t.Any]],
                    sums_names: t.Sequence[str], signatures: t.Dict[str, t.Dict[str, t.Any]]) -> str:
        state = {
            'version': STATE_VERSION,
            'src': {'path': src, 'size': src_stat.st_size, 'mtime_ns': src_stat.st_mtime_ns, 'sha256': src_sha256},
            'options': {'basename': req.basename, 'formats': [list(o) for o in req.formats],
                        'checksums': list(req.checksums)},
            'artifacts': {
                plan.name: {'format': plan.output.format, 'options': plan.options, 'size': artifact['size'],
                            'mtime_ns': artifact['mtime_ns'],
                            'digests': {algo: artifact[algo] for algo in req.checksums}}
                for plan, artifact in zip(plans, artifacts)},
            'checksum_files': list(sums_names),
            'signatures': signatures,
        }
        return json.dumps(state, indent=2, sort_keys=True) + '\n'
