# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""image_export: turn a stopped build disk into artifacts, SHA*SUMS files and manifest.json.

Everything is written under a temporary name in dest (``.NAME.partial-XXXXXXXX``),
fsynced, and renamed into place only once every file of the export is complete,
so a failure leaves the previous export exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import typing as t

from ansible_collections.osimage.builder.plugins.module_utils._errors import InvalidInput, ToolMissing
from ansible_collections.osimage.builder.plugins.module_utils._qemu_img import QemuImgTool
from ansible_collections.osimage.builder.plugins.module_utils._tools import Runner

CHUNK = 1024 * 1024
STATE_FILE = '.image_export.json'
STATE_VERSION = 1
MANIFEST_FILE = 'manifest.json'
PARTIAL = '.partial-'

# checksum name -> the file `sha256sum -c` / `sha512sum -c` reads
CHECKSUM_FILES: t.Dict[str, str] = {'sha256': 'SHA256SUMS', 'sha512': 'SHA512SUMS'}

KEEP = 'keep'        # the artifact on disk is what this export would write
REHASH = 'rehash'    # it is, but a newly requested digest has to be read from it
CONVERT = 'convert'  # it has to be (re)written


class Converter(t.NamedTuple):
    """How one output format is made.

    ``write(tool, src, src_format, out, compress)`` fills the temporary file ``out``.
    ``uses_compress`` says whether the compress option changes the output, so that
    toggling it re-exports only the formats it concerns.
    """
    extension: str
    uses_compress: bool
    write: t.Callable[[QemuImgTool, str, str, str, bool], None]


def _write_qcow2(tool: QemuImgTool, src: str, src_format: str, out: str, compress: bool) -> None:
    # compat=1.1 (qcow2 v3) is what every current hypervisor and cloud importer reads.
    tool.convert(src, out, 'qcow2', src_format, options='compat=1.1', compress=compress)


def _write_raw(tool: QemuImgTool, src: str, src_format: str, out: str, compress: bool) -> None:
    # qemu-img convert leaves runs of zeros as holes, so the raw artifact is sparse.
    tool.convert(src, out, 'raw', src_format)


# The formats this version writes, in the order the documentation lists them.
CONVERTERS: t.Dict[str, Converter] = {
    'qcow2': Converter('qcow2', True, _write_qcow2),
    'raw': Converter('raw', False, _write_raw),
}


class ExportRequest(t.NamedTuple):
    src: str
    dest: str
    basename: str
    formats: t.Sequence[str] = ('qcow2',)
    compress: bool = False
    checksums: t.Sequence[str] = ('sha256',)
    manifest: t.Optional[t.Dict[str, object]] = None
    force: bool = False
    src_format: t.Optional[str] = None


class Planned(t.NamedTuple):
    name: str
    format: str
    converter: Converter
    options: t.Dict[str, object]
    action: str
    recorded: t.Optional[t.Dict[str, t.Any]]


def _unique(items: t.Iterable[str]) -> t.List[str]:
    seen: t.List[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def normalise(req: ExportRequest) -> ExportRequest:
    """Check the options that need no filesystem; raise InvalidInput naming the option."""
    formats = _unique(req.formats or [])
    if not formats:
        raise InvalidInput('formats: name at least one of %s' % ', '.join(CONVERTERS))
    unknown = [f for f in formats if f not in CONVERTERS]
    if unknown:
        raise InvalidInput('formats: %s %s not supported; supported formats: %s'
                           % (', '.join(unknown), 'is' if len(unknown) == 1 else 'are', ', '.join(CONVERTERS)))
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
    manifest = req.manifest
    if manifest is not None:
        if not isinstance(manifest, dict):
            raise InvalidInput('manifest: must be a dictionary, got %s' % type(manifest).__name__)
        if 'artifacts' in manifest:
            raise InvalidInput('manifest: the key "artifacts" is filled in by image_export; leave it out')
    return req._replace(formats=formats, checksums=checksums, manifest=manifest)


def artifact_name(basename: str, fmt: str) -> str:
    return '%s.%s' % (basename, CONVERTERS[fmt].extension)


def hash_file(path: str, algorithms: t.Sequence[str], chunk_size: int = CHUNK,
              sync: bool = False) -> t.Dict[str, str]:
    """All requested digests of one file from a single read of it; optionally fsync it too."""
    hashes = [(name, hashlib.new(name)) for name in algorithms]
    with open(path, 'rb') as handle:
        while True:
            chunk = handle.read(chunk_size)
            if not chunk:
                break
            for _name, digest in hashes:
                digest.update(chunk)
        if sync:
            # fsync flushes the file's dirty pages whichever descriptor asks; qemu-img wrote them.
            os.fsync(handle.fileno())
    return {name: digest.hexdigest() for name, digest in hashes}


def format_sums(entries: t.Iterable[t.Tuple[str, str]]) -> str:
    """(file name, hex digest) pairs as `sha256sum -c` reads them: ``<hex>  <name>``."""
    return ''.join('%s  %s\n' % (digest, name) for name, digest in entries)


def manifest_text(manifest: t.Optional[t.Dict[str, object]], artifacts: t.Sequence[t.Dict[str, object]],
                  algorithms: t.Sequence[str]) -> str:
    data = dict(manifest or {})
    entries = []
    for artifact in artifacts:
        entry = {'path': artifact['name'], 'format': artifact['format'], 'size': artifact['size']}
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

    def write_text(self, name: str, text: str) -> None:
        tmp = self.new(name)
        with open(tmp, 'wb') as handle:
            handle.write(text.encode('utf-8'))
            handle.flush()
            os.fsync(handle.fileno())

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
    """Temporaries that a killed export of these names left behind."""
    prefixes = tuple('.%s%s' % (name, PARTIAL) for name in names)
    removed = []
    for entry in sorted(os.listdir(dest)):
        if entry.startswith(prefixes):
            try:
                os.unlink(os.path.join(dest, entry))
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


class Exporter:
    def __init__(self, run: Runner, check_mode: bool = False, binary: str = 'qemu-img') -> None:
        self.check_mode = check_mode
        self.qemu_img = QemuImgTool(run, binary)

    def _require_qemu_img(self) -> None:
        binary = self.qemu_img.binary
        if not shutil.which(binary) and not os.path.isfile(binary):
            raise ToolMissing('%s is not installed on the build host; install qemu-utils (Debian) or qemu' % binary)

    def export(self, req: ExportRequest) -> t.Dict[str, t.Any]:
        req = normalise(req)
        src = os.path.abspath(req.src)
        dest = os.path.abspath(req.dest)
        names = [artifact_name(req.basename, fmt) for fmt in req.formats]
        sums_names = [CHECKSUM_FILES[algo] for algo in req.checksums]
        check_paths(src, dest, names + sums_names + [MANIFEST_FILE, STATE_FILE])
        self._require_qemu_img()

        src_format = req.src_format or self.qemu_img.info(src).format
        src_stat = os.stat(src)
        state = load_state(dest) if os.path.isdir(dest) else {}
        recorded_src = state.get('src') or {}
        src_sha256: t.Optional[str] = None
        src_unchanged = False
        # Reading src is the price of knowing it is unchanged: a size/mtime match proves nothing
        # about a disk that was copied with its times kept, and a stale artifact is the worst outcome.
        if not req.force and state and recorded_src.get('size') == src_stat.st_size:
            src_sha256 = hash_file(src, ['sha256'])['sha256']
            src_unchanged = src_sha256 == recorded_src.get('sha256')

        recorded_artifacts = state.get('artifacts') or {}
        plans = []
        for fmt, name in zip(req.formats, names):
            converter = CONVERTERS[fmt]
            options = {'format': fmt, 'src_format': src_format,
                       'compress': bool(req.compress and converter.uses_compress)}
            recorded = recorded_artifacts.get(name)
            action = artifact_action(recorded, options, _size_mtime(os.path.join(dest, name)),
                                     req.checksums, src_unchanged, req.force)
            plans.append(Planned(name, fmt, converter, options, action, recorded))

        converting = any(p.action == CONVERT for p in plans)
        written: t.List[str] = []
        removed: t.List[str] = []
        staging = Staging(dest)
        try:
            if converting and not self.check_mode:
                os.makedirs(dest, exist_ok=True)
                remove_stale_partials(dest, names)
                if src_sha256 is None:
                    src_sha256 = hash_file(src, ['sha256'])['sha256']
            artifacts = [self._artifact(p, src, src_format, dest, req.checksums, staging) for p in plans]
            written.extend(p.name for p in plans if p.action == CONVERT)

            if converting and self.check_mode:
                # The new digests are unknown, so every checksum file and the manifest would change.
                written.extend(sums_names + [MANIFEST_FILE])
            else:
                texts = [(CHECKSUM_FILES[algo], format_sums((a['name'], a[algo]) for a in artifacts))
                         for algo in req.checksums]
                texts.append((MANIFEST_FILE, manifest_text(req.manifest, artifacts, req.checksums)))
                for name, text in texts:
                    if req.force or _read_text(os.path.join(dest, name)) != text:
                        written.append(name)
                        if not self.check_mode:
                            staging.write_text(name, text)

            # Only checksum files this module wrote before, and only by their fixed names.
            removed = [name for name in state.get('checksum_files') or []
                       if name in CHECKSUM_FILES.values() and name not in sums_names
                       and os.path.lexists(os.path.join(dest, name))]

            if (written or removed) and not self.check_mode:
                staging.write_text(STATE_FILE, self._state_text(
                    src, src_stat, t.cast(str, src_sha256), req, plans, artifacts, sums_names))
                staging.commit()
                for name in removed:
                    os.unlink(os.path.join(dest, name))
        except BaseException:
            staging.abort()
            raise

        for artifact in artifacts:
            artifact.pop('mtime_ns', None)
        source: t.Dict[str, object] = {'path': src, 'format': src_format, 'size': src_stat.st_size}
        if src_sha256:
            source['sha256'] = src_sha256
        return {
            'changed': bool(written or removed),
            'dest': dest,
            'artifacts': artifacts,
            'checksum_files': [os.path.join(dest, name) for name in sums_names],
            'manifest': os.path.join(dest, MANIFEST_FILE),
            'written': written,
            'removed': removed,
            'source': source,
        }

    def _artifact(self, plan: Planned, src: str, src_format: str, dest: str,
                  algorithms: t.Sequence[str], staging: Staging) -> t.Dict[str, t.Any]:
        path = os.path.join(dest, plan.name)
        artifact: t.Dict[str, t.Any] = {'path': path, 'name': plan.name, 'format': plan.format}
        if plan.action == CONVERT:
            if self.check_mode:
                return artifact  # size and digests are only known once it is written
            tmp = staging.new(plan.name)
            plan.converter.write(self.qemu_img, src, src_format, tmp, bool(plan.options['compress']))
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

    @staticmethod
    def _state_text(src: str, src_stat: os.stat_result, src_sha256: str, req: ExportRequest,
                    plans: t.Sequence[Planned], artifacts: t.Sequence[t.Dict[str, t.Any]],
                    sums_names: t.Sequence[str]) -> str:
        state = {
            'version': STATE_VERSION,
            'src': {'path': src, 'size': src_stat.st_size, 'mtime_ns': src_stat.st_mtime_ns, 'sha256': src_sha256},
            'options': {'basename': req.basename, 'formats': list(req.formats), 'compress': req.compress,
                        'checksums': list(req.checksums)},
            'artifacts': {
                plan.name: {'format': plan.format, 'options': plan.options, 'size': artifact['size'],
                            'mtime_ns': artifact['mtime_ns'],
                            'digests': {algo: artifact[algo] for algo in req.checksums}}
                for plan, artifact in zip(plans, artifacts)},
            'checksum_files': list(sums_names),
        }
        return json.dumps(state, indent=2, sort_keys=True) + '\n'
