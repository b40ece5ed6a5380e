# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OVF descriptor and ``.mf`` manifest text for an OVA export.

An OVA here is a ustar archive of NAME.ovf, NAME.mf and one streamOptimized
VMDK (written elsewhere); this module only produces the two text members.
The descriptor describes one 64-bit x86 virtual machine: CPUs, memory, an LSI
Logic SCSI controller holding the disk, and one NIC on the network
"VM Network".
"""

# What the layout follows, and why:
#
# * DMTF DSP0243 1.0.0 / 1.1.0, "Open Virtualization Format Specification", and
#   its envelope schema DSP8023 (http://schemas.dmtf.org/ovf/envelope/1):
#   References / DiskSection / NetworkSection / VirtualSystem; every Section
#   starts with Info; extension elements carry ovf:required="false"; the
#   manifest line "SHA256(file)= digest". Items use the CIM schema 2 RASD and
#   VSSD classes (CIM_ResourceAllocationSettingData.xsd,
#   CIM_VirtualSystemSettingData.xsd), whose children are an xs:sequence in
#   alphabetical order, so Item and System children are written in that order.
# * CIM_ResourceAllocationSettingData.ResourceType value map: 3 processor,
#   4 memory, 6 parallel SCSI HBA, 10 Ethernet adapter, 17 disk drive.
# * CIM_OperatingSystem.OSType value map (OperatingSystemSection ovf:id):
#   96 "Debian 64-Bit", 101 "Linux 64-Bit", 102 "Other 64-Bit". CIM has no
#   64-bit OpenBSD (65 is plain "OpenBSD", which VirtualBox maps to its 32-bit
#   type, so a 64-bit kernel would not boot); like VirtualBox's own exporter
#   (ApplianceImpl.cpp: "there are no CIM types for these, so these turn to
#   'other' on export: VBOXOSTYPE_OpenBSD_x64") it is written as 102 with the
#   exact VirtualBox type in vbox:OSType, which VirtualBox's importer prefers
#   over the CIM id (ApplianceImplImport.cpp).
# * VMware: the OVF templates VMware publishes in vmware/open-vmdk and OVF Tool
#   exports (capacity in bytes with ovf:capacityAllocationUnits="byte", memory
#   in "byte * 2^20", ResourceSubType "lsilogic", and
#   <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/> as a
#   child of VirtualHardwareSection after the Items). ESXi rejects a package
#   whose VirtualSystemType lists no vmx-NN family it knows ("Unsupported
#   hardware family 'virtualbox-2.2'"), so the type is "vmx-10" alone (ESXi
#   5.5+, Workstation 10+, Fusion 6+); VirtualBox and virt-v2v do not need a
#   virtualbox-N entry. vmw:osType is left out on purpose: a guest id the
#   target does not know makes OVF Tool refuse the package, while the CIM id
#   is mapped by every VMware product.
# * VirtualBox (src/VBox/Main/xml/ovfreader.cpp, ApplianceImplImport.cpp,
#   Runtime/common/checksum/manifest2.cpp): reads Disk@ovf:capacity as bytes
#   and ignores capacityAllocationUnits, accepts "byte * 2^20" for memory,
#   maps a SCSI controller with subtype lsilogic to LsiLogic, a Connection
#   that is not NAT/Internal/HostOnly/Generic to a bridged adapter, E1000 to
#   the Intel PRO/1000 MT Server, ignores vmw:Config (a "uefi" export imports
#   as a BIOS machine there), and matches extension elements by the literal
#   prefix "vbox", so the conventional prefixes are used throughout.
# * virt-v2v parse_ovf_from_ova.ml (oVirt's importer for foreign OVAs): takes
#   the memory VirtualQuantity as MiB whatever AllocationUnits says, finds a
#   disk's controller by an integer InstanceID in rasd:Parent (5 IDE, 6 SCSI,
#   20 SATA), and reads the firmware from vmw:Config key "firmware".
#
# The controller is LSI Logic parallel SCSI because it is the one type all of
# these importers handle the same way and that BIOS boot, Linux (mptspi) and
# OpenBSD (mpi) support; SATA needs a vendor-specific subtype string
# ("vmware.sata.ahci" vs "AHCI") and is unknown to older virt-v2v, and
# VMware's paravirtual SCSI does not exist in VirtualBox.

from __future__ import annotations

import re
import typing as t

OVF_NS = 'http://schemas.dmtf.org/ovf/envelope/1'
RASD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData'
VSSD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData'
VMW_NS = 'http://www.vmware.com/schema/ovf'
VBOX_NS = 'http://www.virtualbox.org/ovf/machine'
XSI_NS = 'http://www.w3.org/2001/XMLSchema-instance'

STREAM_OPTIMIZED = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized'
VIRTUAL_SYSTEM_TYPE = 'vmx-10'
NETWORK_NAME = 'VM Network'
FILE_ID = 'file1'
DISK_ID = 'vmdisk1'
FIRMWARES = ('bios', 'uefi')

# os_type -> (CIM_OperatingSystem.OSType, its CIM description, VirtualBox guest OS type id)
OS_TYPES: t.Dict[str, t.Tuple[int, str, str]] = {
    'debian': (96, 'Debian 64-Bit', 'Debian_64'),
    'linux': (101, 'Linux 64-Bit', 'Linux_64'),
    'openbsd': (102, 'OpenBSD 64-Bit', 'OpenBSD_64'),
    'other': (102, 'Other 64-Bit', 'Other_64'),
}

# InstanceIDs of the hardware items; virt-v2v needs them to be integers.
_ID_CPU, _ID_MEMORY, _ID_SCSI, _ID_DISK, _ID_NIC = 1, 2, 3, 4, 5

_MIB = 1024 * 1024
_SECTOR = 512
# An OVA member is a plain ustar name (at most 100 bytes, no directory). The
# set is kept to characters that need no escaping where importers read the
# href as a URL (OVF Tool) or as a file name (VirtualBox, virt-v2v).
_PLAIN_NAME_RE = re.compile(r'^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$')
_USTAR_NAME_MAX = 100
_NIC_TYPE_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
_SHA256_RE = re.compile(r'^[0-9A-Fa-f]{64}$')
# Characters outside the XML 1.0 Char production cannot be written at all.
_NOT_XML_CHAR_RE = re.compile('[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]')

_TEXT_ESCAPES = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '\r': '&#13;'}
_ATTR_ESCAPES = dict(_TEXT_ESCAPES, **{'"': '&quot;', '\t': '&#9;', '\n': '&#10;'})
_TEXT_ESCAPE_RE = re.compile('[&<>\r]')
_ATTR_ESCAPE_RE = re.compile('[&<>"\t\n\r]')


class _Element(t.NamedTuple):
    tag: str
    attrs: t.Tuple[t.Tuple[str, str], ...] = ()
    text: t.Optional[str] = None
    children: t.Tuple['_Element', ...] = ()


def _el(tag: str, *children: _Element, text: t.Optional[str] = None,
        attrs: t.Sequence[t.Tuple[str, str]] = ()) -> _Element:
    return _Element(tag, tuple(attrs), text, children)


def _escape_text(value: str) -> str:
    return _TEXT_ESCAPE_RE.sub(lambda m: _TEXT_ESCAPES[m.group()], value)


def _escape_attr(value: str) -> str:
    return _ATTR_ESCAPE_RE.sub(lambda m: _ATTR_ESCAPES[m.group()], value)


def _serialize(element: _Element, depth: int, out: t.List[str]) -> None:
    indent = '  ' * depth
    head = element.tag + ''.join(' %s="%s"' % (key, _escape_attr(value)) for key, value in element.attrs)
    if element.children:
        out.append('%s<%s>\n' % (indent, head))
        for child in element.children:
            _serialize(child, depth + 1, out)
        out.append('%s</%s>\n' % (indent, element.tag))
    elif element.text is not None:
        out.append('%s<%s>%s</%s>\n' % (indent, head, _escape_text(element.text), element.tag))
    else:
        out.append('%s<%s/>\n' % (indent, head))


def _check_int(value: object, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError('%s: expected an integer, got %r' % (field, value))
    if value < minimum:
        raise ValueError('%s: must be at least %d, got %d' % (field, minimum, value))
    return value


def _check_str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError('%s: expected a string, got %r' % (field, value))
    bad = _NOT_XML_CHAR_RE.search(value)
    if bad:
        raise ValueError('%s: the character %r cannot be written in XML' % (field, bad.group()))
    return value


def _check_plain_name(value: object, field: str) -> str:
    name = _check_str(value, field)
    if '/' in name or '\\' in name:
        raise ValueError('%s: %r must be a plain file name, without a directory' % (field, name))
    if not _PLAIN_NAME_RE.match(name):
        raise ValueError('%s: %r must be a file name of letters, digits, ".", "_", "+" and "-" '
                         'that does not start with "."' % (field, name))
    if len(name.encode('utf-8')) > _USTAR_NAME_MAX:
        raise ValueError('%s: %r is longer than the %d bytes a ustar member name can have'
                         % (field, name, _USTAR_NAME_MAX))
    return name


def _item(*fields: t.Tuple[str, str]) -> _Element:
    """A VirtualHardwareSection Item; fields are (RASD property, value) in schema (alphabetical) order."""
    return _el('Item', *[_el('rasd:' + name, text=value) for name, value in fields])


def ovf_descriptor(name: str, cpus: int, memory_bytes: int, disk_href: str, disk_file_size: int,
                   disk_capacity: int, populated_size: t.Optional[int] = None, firmware: str = 'bios',
                   description: str = '', os_type: str = 'debian', nic_type: str = 'E1000') -> str:
    """OVF 1.0 envelope text (UTF-8 XML with declaration) for one virtual machine.

    name is the VirtualSystem ovf:id and its Name; disk_href the VMDK's member
    name in the OVA, disk_file_size its size in bytes; disk_capacity the
    virtual disk size in bytes (a multiple of 512); populated_size, if known,
    the bytes of data in it. memory_bytes must be a whole number of MiB.
    firmware is 'bios' or 'uefi' (VMware and virt-v2v honour 'uefi';
    VirtualBox imports such a machine with BIOS firmware). os_type is one of
    OS_TYPES; nic_type the NIC's rasd:ResourceSubType (E1000, VmxNet3,
    PCNet32, ...). The same arguments always give the same text.
    Raises ValueError naming the argument for any value that cannot work.
    """
    name = _check_str(name, 'name')
    if not name.strip():
        raise ValueError('name: must not be empty')
    description = _check_str(description, 'description')
    cpus = _check_int(cpus, 'cpus', 1)
    memory_bytes = _check_int(memory_bytes, 'memory_bytes', 1)
    if memory_bytes % _MIB:
        raise ValueError('memory_bytes: %d is not a whole number of MiB' % memory_bytes)
    memory_mib = memory_bytes // _MIB
    disk_href = _check_plain_name(disk_href, 'disk_href')
    disk_file_size = _check_int(disk_file_size, 'disk_file_size', 1)
    disk_capacity = _check_int(disk_capacity, 'disk_capacity', 1)
    if disk_capacity % _SECTOR:
        raise ValueError('disk_capacity: %d is not a whole number of %d-byte sectors' % (disk_capacity, _SECTOR))
    if populated_size is not None:
        populated_size = _check_int(populated_size, 'populated_size', 1)
        if populated_size > disk_capacity:
            raise ValueError('populated_size: %d is more than disk_capacity %d' % (populated_size, disk_capacity))
    if firmware not in FIRMWARES:
        raise ValueError('firmware: expected one of %s, got %r' % (', '.join(FIRMWARES), firmware))
    if os_type not in OS_TYPES:
        raise ValueError('os_type: expected one of %s, got %r' % (', '.join(sorted(OS_TYPES)), os_type))
    nic_type = _check_str(nic_type, 'nic_type')
    if not _NIC_TYPE_RE.match(nic_type):
        raise ValueError('nic_type: %r is not a device subtype name such as E1000 or VmxNet3' % (nic_type,))
    cim_id, cim_description, vbox_os_type = OS_TYPES[os_type]

    disk_attrs = [
        ('ovf:capacity', str(disk_capacity)),
        ('ovf:capacityAllocationUnits', 'byte'),
        ('ovf:diskId', DISK_ID),
        ('ovf:fileRef', FILE_ID),
        ('ovf:format', STREAM_OPTIMIZED),
    ]
    if populated_size is not None:
        disk_attrs.append(('ovf:populatedSize', str(populated_size)))

    hardware = [
        _el('Info', text='Virtual hardware requirements'),
        _el('System',
            _el('vssd:ElementName', text='Virtual Hardware Family'),
            _el('vssd:InstanceID', text='0'),
            _el('vssd:VirtualSystemIdentifier', text=name),
            _el('vssd:VirtualSystemType', text=VIRTUAL_SYSTEM_TYPE)),
        _item(('Description', 'Number of virtual CPUs'),
              ('ElementName', '%d virtual CPU(s)' % cpus),
              ('InstanceID', str(_ID_CPU)),
              ('ResourceType', '3'),
              ('VirtualQuantity', str(cpus))),
        _item(('AllocationUnits', 'byte * 2^20'),
              ('Description', 'Memory Size'),
              ('ElementName', '%d MB of memory' % memory_mib),
              ('InstanceID', str(_ID_MEMORY)),
              ('ResourceType', '4'),
              ('VirtualQuantity', str(memory_mib))),
        _item(('Address', '0'),
              ('Description', 'SCSI Controller'),
              ('ElementName', 'SCSI Controller 0'),
              ('InstanceID', str(_ID_SCSI)),
              ('ResourceSubType', 'lsilogic'),
              ('ResourceType', '6')),
        _item(('AddressOnParent', '0'),
              ('Description', 'Hard disk'),
              ('ElementName', 'Hard Disk 1'),
              ('HostResource', 'ovf:/disk/%s' % DISK_ID),
              ('InstanceID', str(_ID_DISK)),
              ('Parent', str(_ID_SCSI)),
              ('ResourceType', '17')),
        _item(('AutomaticAllocation', 'true'),
              ('Connection', NETWORK_NAME),
              ('Description', '%s ethernet adapter on "%s"' % (nic_type, NETWORK_NAME)),
              ('ElementName', 'Ethernet 1'),
              ('InstanceID', str(_ID_NIC)),
              ('ResourceSubType', nic_type),
              ('ResourceType', '10')),
    ]
    if firmware == 'uefi':
        hardware.append(_el('vmw:Config', attrs=(
            ('ovf:required', 'false'), ('vmw:key', 'firmware'), ('vmw:value', 'efi'))))

    system = [
        _el('Info', text='A virtual machine'),
        _el('Name', text=name),
    ]
    if description:
        system.append(_el('AnnotationSection',
                          _el('Info', text='A human-readable annotation'),
                          _el('Annotation', text=description)))
    system.append(_el('OperatingSystemSection',
                      _el('Info', text='The kind of installed guest operating system'),
                      _el('Description', text=cim_description),
                      _el('vbox:OSType', text=vbox_os_type, attrs=(('ovf:required', 'false'),)),
                      attrs=(('ovf:id', str(cim_id)),)))
    system.append(_el('VirtualHardwareSection', *hardware))

    envelope = _el(
        'Envelope',
        _el('References',
            _el('File', attrs=(('ovf:href', disk_href), ('ovf:id', FILE_ID), ('ovf:size', str(disk_file_size))))),
        _el('DiskSection',
            _el('Info', text='Virtual disk information'),
            _el('Disk', attrs=disk_attrs)),
        _el('NetworkSection',
            _el('Info', text='The list of logical networks'),
            _el('Network',
                _el('Description', text='The %s network' % NETWORK_NAME),
                attrs=(('ovf:name', NETWORK_NAME),))),
        _el('VirtualSystem', *system, attrs=(('ovf:id', name),)),
        attrs=(
            ('xmlns', OVF_NS),
            ('xmlns:ovf', OVF_NS),
            ('xmlns:rasd', RASD_NS),
            ('xmlns:vbox', VBOX_NS),
            ('xmlns:vmw', VMW_NS),
            ('xmlns:vssd', VSSD_NS),
            ('xmlns:xsi', XSI_NS),
        ))

    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    _serialize(envelope, 0, out)
    return ''.join(out)


def manifest_text(entries: t.Iterable[t.Tuple[str, str]]) -> str:
    """(file name, sha256 hex) -> 'SHA256(name)= hex\\n' lines, as VMware ovftool and VirtualBox write/check .mf files.

    The lines keep the order of entries (put the .ovf first, as OVF Tool
    does). ESXi rejects the spaced form "SHA256 (name) = hex" that some tools
    write, VirtualBox reads both. Digests are written in lower case.
    """
    lines = []
    seen: t.Set[str] = set()
    for entry in entries:
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise ValueError('entries: expected (file name, sha256 hex) pairs, got %r' % (entry,))
        name = _check_plain_name(entry[0], 'entries')
        digest = entry[1]
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise ValueError('entries: the digest for %r is not 64 hex digits: %r' % (name, digest))
        if name in seen:
            raise ValueError('entries: %r is listed twice' % (name,))
        seen.add(name)
        lines.append('SHA256(%s)= %s\n' % (name, digest.lower()))
    if not lines:
        raise ValueError('entries: a manifest needs at least one file')
    return ''.join(lines)
