# Reads an OVA the way an importer does and prints what it found as JSON:
# the tar member order, the OVF's CPU, memory, disk and NIC entries
# (DMTF DSP0243: ResourceType 3 CPU, 4 memory, 10 NIC, 17 disk) and
# whether the .mf digests match the members.
import hashlib
import json
import sys
import tarfile
import xml.etree.ElementTree as ET

NS = {'ovf': 'http://schemas.dmtf.org/ovf/envelope/1',
      'rasd': 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData'}
OVF = '{%s}' % NS['ovf']

found = {'members': [], 'digests_ok': False}
digests = {}
ovf = mf = None
with tarfile.open(sys.argv[1]) as archive:
    found['format_ustar'] = all(m.isreg() for m in archive.getmembers())
    for member in archive.getmembers():
        found['members'].append(member.name)
        data = archive.extractfile(member).read()
        digests[member.name] = hashlib.sha256(data).hexdigest()
        if member.name.endswith('.ovf'):
            ovf = ET.fromstring(data)
        elif member.name.endswith('.mf'):
            mf = data.decode()
items = {}
for item in ovf.iter('{%s}Item' % NS['ovf']):
    kind = item.find('rasd:ResourceType', NS).text
    items[kind] = {child.tag.split('}')[1]: child.text for child in item}
disk = ovf.find('ovf:DiskSection/ovf:Disk', NS)
ref = ovf.find('ovf:References/ovf:File', NS)
found['cpus'] = int(items['3']['VirtualQuantity'])
found['memory_mib'] = int(items['4']['VirtualQuantity'])
found['memory_units'] = items['4']['AllocationUnits']
found['nic'] = items['10'].get('ResourceSubType')
found['disk_host_resource'] = items['17']['HostResource']
found['disk_capacity'] = int(disk.get(OVF + 'capacity'))
found['disk_format'] = disk.get(OVF + 'format')
found['file_href'] = ref.get(OVF + 'href')
found['file_size'] = int(ref.get(OVF + 'size'))
expected = ''.join('SHA256(%s)= %s\n' % (name, digests[name]) for name in found['members'] if not name.endswith('.mf'))
found['digests_ok'] = mf == expected
print(json.dumps(found))
