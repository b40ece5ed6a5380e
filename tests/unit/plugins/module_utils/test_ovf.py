# -*- coding: utf-8 -*-
from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.osimage.builder.plugins.module_utils import _ovf
from ansible_collections.osimage.builder.plugins.module_utils._ovf import manifest_text, ovf_descriptor

OVF = '{http://schemas.dmtf.org/ovf/envelope/1}'
RASD = '{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}'
VSSD = '{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData}'
VMW = '{http://www.vmware.com/schema/ovf}'
VBOX = '{http://www.virtualbox.org/ovf/machine}'

MIB = 1024 * 1024
GIB = 1024 * MIB
SHA_A = 'a' * 64
SHA_B = '0123456789abcdef' * 4


def descriptor(**overrides):
    args = dict(name='debian-12', cpus=2, memory_bytes=2 * GIB, disk_href='debian-12-disk1.vmdk',
                disk_file_size=654321, disk_capacity=20 * GIB)
    args.update(overrides)
    return ovf_descriptor(**args)


def parse(text):
    return ET.fromstring(text.encode('utf-8'))


def hardware(root):
    return root.find('%sVirtualSystem/%sVirtualHardwareSection' % (OVF, OVF))


def items_by_type(root):
    found = {}
    for item in hardware(root).findall(OVF + 'Item'):
        found.setdefault(int(item.findtext(RASD + 'ResourceType')), []).append(item)
    return found


def only(root, resource_type):
    items = items_by_type(root)[resource_type]
    assert len(items) == 1
    return items[0]


def test_declaration_and_envelope():
    text = descriptor()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Envelope ')
    assert text.endswith('</Envelope>\n')
    root = parse(text)
    assert root.tag == OVF + 'Envelope'
    for prefix in ('xmlns:ovf=', 'xmlns:rasd=', 'xmlns:vssd=', 'xmlns:vmw=', 'xmlns:vbox=', 'xmlns:xsi='):
        assert prefix in text.split('\n')[1]
    assert [child.tag for child in root] == [
        OVF + 'References', OVF + 'DiskSection', OVF + 'NetworkSection', OVF + 'VirtualSystem']


def test_references_and_disk_section():
    root = parse(descriptor(populated_size=3 * GIB))
    files = root.findall('%sReferences/%sFile' % (OVF, OVF))
    assert [f.attrib for f in files] == [{
        OVF + 'href': 'debian-12-disk1.vmdk', OVF + 'id': 'file1', OVF + 'size': '654321'}]
    disks = root.findall('%sDiskSection/%sDisk' % (OVF, OVF))
    assert [d.attrib for d in disks] == [{
        OVF + 'capacity': str(20 * GIB),
        OVF + 'capacityAllocationUnits': 'byte',
        OVF + 'diskId': 'vmdisk1',
        OVF + 'fileRef': 'file1',
        OVF + 'format': 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized',
        OVF + 'populatedSize': str(3 * GIB),
    }]
    assert root.find('%sDiskSection/%sInfo' % (OVF, OVF)).text


def test_populated_size_is_optional():
    disk = parse(descriptor()).find('%sDiskSection/%sDisk' % (OVF, OVF))
    assert OVF + 'populatedSize' not in disk.attrib


def test_virtual_system_name_and_system():
    root = parse(descriptor())
    vs = root.find(OVF + 'VirtualSystem')
    assert vs.get(OVF + 'id') == 'debian-12'
    assert vs.findtext(OVF + 'Name') == 'debian-12'
    assert vs.findtext(OVF + 'Info')
    system = hardware(root).find(OVF + 'System')
    assert system.findtext(VSSD + 'VirtualSystemType') == 'vmx-10'
    assert system.findtext(VSSD + 'VirtualSystemIdentifier') == 'debian-12'
    assert system.findtext(VSSD + 'InstanceID') == '0'
    assert system.findtext(VSSD + 'ElementName')


def test_cpu_and_memory_items():
    root = parse(descriptor(cpus=4, memory_bytes=3 * GIB + 512 * MIB))
    cpu = only(root, 3)
    assert cpu.findtext(RASD + 'VirtualQuantity') == '4'
    memory = only(root, 4)
    assert memory.findtext(RASD + 'AllocationUnits') == 'byte * 2^20'
    assert memory.findtext(RASD + 'VirtualQuantity') == '3584'


def test_disk_hangs_off_the_scsi_controller():
    root = parse(descriptor())
    controller = only(root, 6)
    assert controller.findtext(RASD + 'ResourceSubType') == 'lsilogic'
    disk = only(root, 17)
    assert disk.findtext(RASD + 'HostResource') == 'ovf:/disk/vmdisk1'
    assert disk.findtext(RASD + 'Parent') == controller.findtext(RASD + 'InstanceID')
    assert disk.findtext(RASD + 'AddressOnParent') == '0'


@pytest.mark.parametrize('nic_type', ['E1000', 'VmxNet3', 'PCNet32'])
def test_nic_item(nic_type):
    root = parse(descriptor(nic_type=nic_type))
    nic = only(root, 10)
    assert nic.findtext(RASD + 'ResourceSubType') == nic_type
    assert nic.findtext(RASD + 'AutomaticAllocation') == 'true'
    networks = [n.get(OVF + 'name') for n in root.findall('%sNetworkSection/%sNetwork' % (OVF, OVF))]
    assert networks == ['VM Network']
    assert nic.findtext(RASD + 'Connection') == 'VM Network'


def test_references_resolve_like_an_importer():
    """Chase HostResource -> Disk -> File and Parent -> controller as virt-v2v and VirtualBox do."""
    root = parse(descriptor())
    instance_ids = [int(item.findtext(RASD + 'InstanceID')) for item in hardware(root).findall(OVF + 'Item')]
    assert len(set(instance_ids)) == len(instance_ids) == 5
    disk_item = only(root, 17)
    disk_id = re.match(r'^(?:ovf:)?/disk/(.*)$', disk_item.findtext(RASD + 'HostResource')).group(1)
    disk = root.find("%sDiskSection/%sDisk[@%sdiskId='%s']" % (OVF, OVF, OVF, disk_id))
    file_ = root.find("%sReferences/%sFile[@%sid='%s']" % (OVF, OVF, OVF, disk.get(OVF + 'fileRef')))
    assert file_.get(OVF + 'href') == 'debian-12-disk1.vmdk'
    parent = int(disk_item.findtext(RASD + 'Parent'))
    parents = [i for i in hardware(root).findall(OVF + 'Item') if int(i.findtext(RASD + 'InstanceID')) == parent]
    assert [p.findtext(RASD + 'ResourceType') for p in parents] == ['6']


def test_children_follow_schema_order():
    """The CIM RASD/VSSD schemas are xs:sequences in alphabetical order."""
    root = parse(descriptor(firmware='uefi'))
    section = hardware(root)
    for item in section.findall(OVF + 'Item'):
        names = [child.tag[len(RASD):] for child in item]
        assert all(child.tag.startswith(RASD) for child in item)
        assert names == sorted(names)
    names = [child.tag[len(VSSD):] for child in section.find(OVF + 'System')]
    assert names == sorted(names)
    tags = [child.tag for child in section]
    assert tags[:2] == [OVF + 'Info', OVF + 'System']
    assert tags[-1] == VMW + 'Config', 'extensions come after the Items'
    vs_tags = [child.tag for child in root.find(OVF + 'VirtualSystem')]
    assert vs_tags[:2] == [OVF + 'Info', OVF + 'Name']


def test_bios_has_no_firmware_config():
    text = descriptor(firmware='bios')
    assert hardware(parse(text)).findall(VMW + 'Config') == []
    assert 'vmw:Config' not in text


def test_uefi_firmware_config():
    configs = hardware(parse(descriptor(firmware='uefi'))).findall(VMW + 'Config')
    assert [c.attrib for c in configs] == [{OVF + 'required': 'false', VMW + 'key': 'firmware', VMW + 'value': 'efi'}]


@pytest.mark.parametrize('os_type, cim_id, vbox_type', [
    ('debian', '96', 'Debian_64'),
    ('linux', '101', 'Linux_64'),
    ('openbsd', '102', 'OpenBSD_64'),
    ('other', '102', 'Other_64'),
])
def test_operating_system_section(os_type, cim_id, vbox_type):
    section = parse(descriptor(os_type=os_type)).find('%sVirtualSystem/%sOperatingSystemSection' % (OVF, OVF))
    assert section.get(OVF + 'id') == cim_id
    assert section.findtext(OVF + 'Info')
    assert section.findtext(OVF + 'Description')
    vbox = section.find(VBOX + 'OSType')
    assert vbox.text == vbox_type
    assert vbox.get(OVF + 'required') == 'false'


def test_os_type_default_is_debian():
    section = parse(descriptor()).find('%sVirtualSystem/%sOperatingSystemSection' % (OVF, OVF))
    assert section.get(OVF + 'id') == '96'


def test_special_characters_are_escaped():
    name = 'a<&">\'b'
    description = 'x < y && "z" > \'w\'\nsecond line\tend'
    text = descriptor(name=name, description=description)
    root = parse(text)
    vs = root.find(OVF + 'VirtualSystem')
    assert vs.get(OVF + 'id') == name
    assert vs.findtext(OVF + 'Name') == name
    assert hardware(root).find(OVF + 'System').findtext(VSSD + 'VirtualSystemIdentifier') == name
    assert vs.findtext('%sAnnotationSection/%sAnnotation' % (OVF, OVF)) == description
    assert 'a<&' not in text
    assert 'ovf:id="a&lt;&amp;&quot;&gt;\'b"' in text


def test_whitespace_in_attributes_survives_parsing():
    name = 'tab\there\nnewline\rreturn'
    root = parse(descriptor(name=name, description='cr\r\nlf'))
    vs = root.find(OVF + 'VirtualSystem')
    assert vs.get(OVF + 'id') == name
    assert vs.findtext(OVF + 'Name') == name
    assert vs.findtext('%sAnnotationSection/%sAnnotation' % (OVF, OVF)) == 'cr\r\nlf'


def test_non_ascii_name_is_utf8():
    text = descriptor(name='Débian ☃', description='naïve')
    assert 'Débian ☃' in text
    assert parse(text).find(OVF + 'VirtualSystem').get(OVF + 'id') == 'Débian ☃'


def test_no_annotation_without_description():
    assert parse(descriptor()).find('%sVirtualSystem/%sAnnotationSection' % (OVF, OVF)) is None


def test_deterministic():
    kwargs = dict(name='x&y', populated_size=GIB, firmware='uefi', description='d', os_type='openbsd',
                  nic_type='VmxNet3')
    assert descriptor(**kwargs) == descriptor(**kwargs)
    assert descriptor() == descriptor()
    assert descriptor() != descriptor(cpus=3)


@pytest.mark.parametrize('overrides, field', [
    (dict(cpus=0), 'cpus'),
    (dict(cpus=True), 'cpus'),
    (dict(cpus='2'), 'cpus'),
    (dict(memory_bytes=0), 'memory_bytes'),
    (dict(memory_bytes=GIB + 1), 'memory_bytes'),
    (dict(memory_bytes=512 * 1024), 'memory_bytes'),
    (dict(memory_bytes=2.0 * GIB), 'memory_bytes'),
    (dict(disk_href='dir/disk.vmdk'), 'disk_href'),
    (dict(disk_href='dir\\disk.vmdk'), 'disk_href'),
    (dict(disk_href=''), 'disk_href'),
    (dict(disk_href='..'), 'disk_href'),
    (dict(disk_href='.hidden.vmdk'), 'disk_href'),
    (dict(disk_href='my disk.vmdk'), 'disk_href'),
    (dict(disk_href='d%20.vmdk'), 'disk_href'),
    (dict(disk_href='x' * 101), 'disk_href'),
    (dict(disk_file_size=0), 'disk_file_size'),
    (dict(disk_capacity=0), 'disk_capacity'),
    (dict(disk_capacity=GIB + 100), 'disk_capacity'),
    (dict(populated_size=0), 'populated_size'),
    (dict(populated_size=21 * GIB), 'populated_size'),
    (dict(firmware='efi'), 'firmware'),
    (dict(firmware='UEFI'), 'firmware'),
    (dict(os_type='windows'), 'os_type'),
    (dict(nic_type=''), 'nic_type'),
    (dict(nic_type='E1000<x>'), 'nic_type'),
    (dict(name=''), 'name'),
    (dict(name='  '), 'name'),
    (dict(name='nul\x00'), 'name'),
    (dict(name=None), 'name'),
    (dict(description='bell\x07'), 'description'),
    (dict(description='\ud800'), 'description'),
])
def test_invalid_arguments(overrides, field):
    with pytest.raises(ValueError) as caught:
        descriptor(**overrides)
    assert str(caught.value).startswith(field + ': ')


def test_manifest_text():
    assert manifest_text([('debian-12.ovf', SHA_A), ('debian-12-disk1.vmdk', SHA_B.upper())]) == (
        'SHA256(debian-12.ovf)= %s\n'
        'SHA256(debian-12-disk1.vmdk)= %s\n' % (SHA_A, SHA_B))


def test_manifest_keeps_order_and_accepts_iterators():
    text = manifest_text(iter([('b.vmdk', SHA_B), ('a.ovf', SHA_A)]))
    assert [line.split(')')[0] for line in text.splitlines()] == ['SHA256(b.vmdk', 'SHA256(a.ovf']


def test_manifest_lines_parse_like_ovftool_and_virtualbox_expect():
    text = manifest_text([('n.ovf', SHA_A), ('n-disk1.vmdk', SHA_B)])
    assert text.endswith('\n') and '\r' not in text
    for line in text.splitlines():
        assert re.match(r'^SHA256\(([^()\s]+)\)= ([0-9a-f]{64})$', line)


@pytest.mark.parametrize('entries', [
    [],
    [('a.ovf', 'abc')],
    [('a.ovf', 'g' * 64)],
    [('a.ovf', SHA_A + '0')],
    [('a.ovf', None)],
    [('dir/a.ovf', SHA_A)],
    [('a b.ovf', SHA_A)],
    [('', SHA_A)],
    [('a.ovf', SHA_A), ('a.ovf', SHA_B)],
    [('a.ovf',)],
    ['a.ovf'],
])
def test_manifest_rejects(entries):
    with pytest.raises(ValueError) as caught:
        manifest_text(entries)
    assert str(caught.value).startswith('entries: ')


@pytest.mark.skipif(shutil.which('xmllint') is None, reason='xmllint is not installed')
@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(name='a<&">\'b ☃', description='x\r\ny\t<z>', firmware='uefi', populated_size=GIB, os_type='openbsd'),
])
def test_xmllint_accepts_descriptor(tmp_path, kwargs):
    path = tmp_path / 'vm.ovf'
    path.write_bytes(descriptor(**kwargs).encode('utf-8'))
    result = subprocess.run(['xmllint', '--noout', str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''


def test_os_types_table_is_complete():
    assert set(_ovf.OS_TYPES) >= {'debian', 'openbsd', 'linux', 'other'}
