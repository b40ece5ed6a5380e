#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: osimage.builder contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cloud_upload
short_description: Publish an image artifact to S3-compatible storage, AWS, Azure, Google Cloud or OpenStack
version_added: 0.1.0
description:
  - Uploads one artifact that M(osimage.builder.image_export) wrote and, for the image services, registers it as
    an image - an object in any S3-compatible bucket (O(target=s3)), an EBS snapshot and AMI (O(target=aws_ami)),
    a page blob and managed image (O(target=azure)), a Cloud Storage object and Compute Engine image
    (O(target=gce)), or a Glance image (O(target=openstack_glance)).
  - Idempotent by digest. The artifact's SHA-256 travels with what is published (object metadata, tags, labels
    or image properties named C(osimage-sha256) or the nearest spelling the cloud allows). When an object or
    image of O(name) already carries the same digest, nothing is sent and the result is C(changed=false).
  - The data sent is checked against O(sha256) before the object or image becomes visible; a mismatch fails the
    task and leaves nothing behind.
  - A failed upload leaves no partial object, snapshot or image behind unless O(keep_partial=true); so does a
    cancelled one (SIGTERM, SIGINT or SIGHUP, as ansible's worker passes them on when the playbook is cancelled or
    its lease keeper ends the workers of a killed playbook). An upload that a run killed outright (SIGKILL of the
    module itself) left unfinished is resumed (S3 multipart uploads) or replaced by the next run.
  - Throttling and network errors are retried with exponential backoff (O(retries)); waits for the cloud end
    after O(wait_timeout) seconds, or at once when the cloud reports a failure.
  - The cloud SDKs are imported only for the target in use (boto3; azure-storage-blob, azure-identity and
    azure-mgmt-compute; google-cloud-storage and google-cloud-compute; openstacksdk). The module may run on the
    build host or on the controller (with C(delegate_to) V(localhost)), wherever the SDK, the credentials and the
    artifact are.
  - Credentials come from the options below or from each provider's usual environment variables, which is what
    AWX's credential types inject.
author:
  - osimage.builder developers (@osimage)
options:
  target:
    description:
      - Where the artifact goes.
    type: str
    required: true
    choices: [s3, aws_ami, azure, gce, openstack_glance]
  state:
    description:
      - V(present) uploads O(src) and registers the image.
      - V(absent) deletes the object or image O(name) (and, for images, the snapshot, blob or object behind it
        that this module created).
      - V(pruned) keeps the O(keep_newest) newest images of O(family) and deletes the others. In check mode
        it only lists what it would delete.
    type: str
    default: present
    choices: [present, absent, pruned]
  src:
    description:
      - The artifact to upload. Required with O(state=present).
      - O(target=aws_ami) takes a V(raw) image; O(target=azure) a fixed VHD (C(vhd) output); O(target=gce) the
        C(disk.raw) tar.gz of the C(gce) output; O(target=openstack_glance) a qcow2, raw, vmdk, vhd or vhdx image;
        O(target=s3) any artifact.
    type: path
  sha256:
    description:
      - The SHA-256 the artifact is expected to have, for example C(artifact.sha256) from
        M(osimage.builder.image_export). When given, a remote object or image with this digest makes the task
        unchanged without reading O(src), and the data is verified while it is sent.
      - When not given, O(src) is read once to compute it before anything is sent.
    type: str
  name:
    description:
      - Name of the published object or image. For O(target=s3) the default object key; for the others the
        image name, which the cloud may restrict (AMI names - 3 to 128 letters, digits and C(()[] ./'@_-);
        Compute Engine names - up to 63 lowercase letters, digits and hyphens, starting with a letter).
    type: str
    required: true
  family:
    description:
      - Groups the images that one blueprint publishes, recorded as C(osimage-family) with each image.
        O(state=pruned) works on one family.
    type: str
  keep_newest:
    description:
      - With O(state=pruned), the number of images of O(family) that stay, newest by creation time first.
    type: int
  description:
    description:
      - Description of the image or snapshot, where the cloud has one.
    type: str
    default: ''
  tags:
    description:
      - Tags or metadata added to what is published. Azure blob metadata names must be C# identifiers; S3
        metadata must be ASCII; Compute Engine labels are lowercase letters, digits, C(_) and C(-); Glance
        takes them as image properties.
    type: dict
    default: {}
  force:
    description:
      - Replace an image of O(name) that exists with another digest. Without it such an image is an error,
        because image names are unique and the existing image may be in use.
    type: bool
    default: false
  keep_partial:
    description:
      - Leave what a failed upload created (multipart upload, pending snapshot, blob, queued image) for
        inspection or a later resume, instead of deleting it.
    type: bool
    default: false
  wait:
    description:
      - Wait until the image is available (snapshot completed, image active or ready).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the cloud, for each wait.
    type: int
    default: 1800
  retries:
    description:
      - How often a throttled or failed call is retried, with exponential backoff and jitter.
    type: int
    default: 5
  s3:
    description:
      - Options of O(target=s3), and of the S3 staging of O(aws_ami.method=import_snapshot).
    type: dict
    suboptions:
      bucket:
        description: The bucket; it must exist.
        type: str
        required: true
      key:
        description: Object key. Defaults to O(name).
        type: str
      endpoint_url:
        description:
          - URL of an S3-compatible endpoint (MinIO, Ceph RGW, a test server). Defaults to AWS.
        type: str
      part_size:
        description:
          - Size of one multipart part (C(8M), C(64M)); between 5 MiB and 5 GiB. Files smaller than one
            part are sent in one request. Raised (with a warning) when the file would need more than S3's
            10000 parts.
          - Each multipart upload is recorded in C(~/.cache/osimage-builder/s3-uploads/) of the user running the
            module, so that a later run with the same artifact and part size resumes it.
        type: str
        default: 16M
      concurrency:
        description: Parts sent at the same time.
        type: int
        default: 8
      storage_class:
        description: Storage class of the object (C(STANDARD), C(STANDARD_IA), ...).
        type: str
      content_type:
        description: Content type of the object.
        type: str
        default: application/octet-stream
  aws_ami:
    description:
      - Options of O(target=aws_ami).
    type: dict
    suboptions:
      method:
        description:
          - V(ebs_direct) writes the snapshot through the EBS direct APIs (StartSnapshot, PutSnapshotBlock,
            CompleteSnapshot), skipping all-zero blocks; needs no bucket and no vmimport role.
          - V(import_snapshot) uploads to S3 (O(s3)) and calls ImportSnapshot, which needs the C(vmimport)
            service role. The object (O(s3.key), default O(name) with C(.raw) appended) is deleted once imported.
        type: str
        default: ebs_direct
        choices: [ebs_direct, import_snapshot]
      architecture:
        description: Architecture of the image.
        type: str
        default: x86_64
        choices: [x86_64, arm64, i386]
      boot_mode:
        description: Firmware the image boots with.
        type: str
        default: legacy-bios
        choices: [legacy-bios, uefi, uefi-preferred]
      ena_support:
        description: Mark the image as having the ENA driver.
        type: bool
        default: true
      imds_support:
        description: V(v2.0) makes instances of the image require IMDSv2.
        type: str
        choices: [v2.0]
      root_device_name:
        description: Device name of the root volume.
        type: str
        default: /dev/xvda
      volume_size:
        description:
          - Size of the snapshot in GiB. Defaults to the artifact's size rounded up to whole GiB.
        type: int
      volume_type:
        description: Volume type of the root device in the image's block device mapping.
        type: str
        default: gp3
      share_with:
        description: AWS account ids that may launch the image.
        type: list
        elements: str
        default: []
      public:
        description:
          - Let every AWS account launch the image. V(false) removes the public launch permission from an image
            that has it; O(aws_ami.share_with) only adds accounts.
        type: bool
        default: false
      ec2_endpoint_url:
        description: URL of the EC2 endpoint (tests, private regions).
        type: str
      ebs_endpoint_url:
        description: URL of the EBS direct APIs' endpoint.
        type: str
  azure:
    description:
      - Options of O(target=azure).
    type: dict
    suboptions:
      storage_account:
        description: Name of the storage account that receives the page blob.
        type: str
      container:
        description: Blob container; it must exist.
        type: str
        required: true
      blob:
        description: Blob name. Defaults to O(name) with C(.vhd) appended.
        type: str
      resource_group:
        description: Resource group of the image. Without it only the page blob is uploaded.
        type: str
      location:
        description: Azure region of the image, for example C(westeurope).
        type: str
      hyper_v_generation:
        description: V(V2) for UEFI images.
        type: str
        default: V1
        choices: [V1, V2]
      os_type:
        description: Operating system type of the image.
        type: str
        default: Linux
        choices: [Linux, Windows]
      blob_endpoint:
        description: URL of the blob service (Azurite, sovereign clouds). Defaults to the account's public one.
        type: str
      resource_manager_endpoint:
        description: URL of Azure Resource Manager. Defaults to the public cloud's.
        type: str
      authority_host:
        description: URL of the Microsoft Entra authority that issues tokens. Defaults to the public cloud's.
        type: str
  gce:
    description:
      - Options of O(target=gce).
    type: dict
    suboptions:
      bucket:
        description: Cloud Storage bucket that receives the tar.gz; it must exist.
        type: str
        required: true
      object:
        description: Object name. Defaults to O(name) with C(.tar.gz) appended.
        type: str
      project:
        description:
          - Project of the image. Defaults to O(gcp_project), then the service account key's C(project_id).
        type: str
      guest_os_features:
        description: Guest OS features of the image, for example V(UEFI_COMPATIBLE), V(VIRTIO_SCSI_MULTIQUEUE), V(GVNIC).
        type: list
        elements: str
        default: []
      architecture:
        description: CPU architecture of the image.
        type: str
        default: X86_64
        choices: [X86_64, ARM64]
      licenses:
        description: License URLs attached to the image.
        type: list
        elements: str
        default: []
      storage_locations:
        description: Cloud Storage locations of the image, for example V(eu).
        type: list
        elements: str
        default: []
      keep_object:
        description: Keep the tar.gz in the bucket once the image is ready (it is deleted by default).
        type: bool
        default: false
      storage_endpoint:
        description: URL of the Cloud Storage JSON API (emulators, private endpoints).
        type: str
      compute_endpoint:
        description: URL of the Compute Engine API.
        type: str
  openstack_glance:
    description:
      - Options of O(target=openstack_glance).
    type: dict
    suboptions:
      disk_format:
        description: Glance disk format. Defaults to the format of O(src), from its name.
        type: str
        choices: [qcow2, raw, vmdk, vhd, vhdx, vdi, iso]
      container_format:
        description: Glance container format.
        type: str
        default: bare
        choices: [bare, ovf, ova]
      visibility:
        description: Who may see and boot the image.
        type: str
        default: private
        choices: [private, shared, community, public]
      min_disk:
        description: Smallest root disk, in GiB, that the image boots from.
        type: int
      min_ram:
        description: Smallest memory, in MiB, that the image boots with.
        type: int
      protected:
        description: Protect the image from deletion.
        type: bool
        default: false
      properties:
        description: Image properties, for example C(hw_firmware_type=uefi) or C(os_distro=debian).
        type: dict
        default: {}
      image_endpoint:
        description: URL of the Image service, instead of the one in the Keystone catalog.
        type: str
  aws_access_key_id:
    description: AWS access key. Falls back to E(AWS_ACCESS_KEY_ID).
    type: str
  aws_secret_access_key:
    description: AWS secret key. Falls back to E(AWS_SECRET_ACCESS_KEY).
    type: str
  aws_session_token:
    description: AWS session token. Falls back to E(AWS_SESSION_TOKEN).
    type: str
  aws_profile:
    description: Profile of the AWS shared credentials file. Falls back to E(AWS_PROFILE).
    type: str
  aws_region:
    description: AWS region. Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
    type: str
  azure_client_id:
    description: Client id of the service principal. Falls back to E(AZURE_CLIENT_ID).
    type: str
  azure_secret:
    description: Secret of the service principal. Falls back to E(AZURE_SECRET), then E(AZURE_CLIENT_SECRET).
    type: str
  azure_tenant:
    description: Tenant of the service principal. Falls back to E(AZURE_TENANT), then E(AZURE_TENANT_ID).
    type: str
  azure_subscription_id:
    description: Subscription of the image. Falls back to E(AZURE_SUBSCRIPTION_ID).
    type: str
  azure_storage_key:
    description:
      - Key of the storage account. Falls back to E(AZURE_STORAGE_KEY). Without it, the service principal's
        token is used for the blob too.
    type: str
  gcp_credentials_file:
    description:
      - Service account key file (JSON). Falls back to E(GOOGLE_APPLICATION_CREDENTIALS), E(GCP_SERVICE_ACCOUNT_FILE),
        then E(GCE_CREDENTIALS_FILE_PATH); without any, the application default credentials are used.
    type: path
  gcp_credentials:
    description: The service account key's JSON text, instead of a file. Falls back to E(GCP_SERVICE_ACCOUNT_CONTENTS).
    type: str
  gcp_project:
    description: Google Cloud project. Falls back to E(GOOGLE_CLOUD_PROJECT), E(GCP_PROJECT), then E(GCE_PROJECT).
    type: str
  openstack_cloud:
    description:
      - Name of a cloud in C(clouds.yaml). Falls back to E(OS_CLOUD). Without it and O(openstack_auth), openstacksdk
        reads the E(OS_AUTH_URL), E(OS_USERNAME), E(OS_PASSWORD) ... variables.
    type: str
  openstack_auth:
    description:
      - Keystone authentication - C(auth_url), C(username), C(password), C(project_name), C(user_domain_name),
        C(project_domain_name), or C(application_credential_id) and C(application_credential_secret).
    type: dict
  openstack_region:
    description: OpenStack region. Falls back to E(OS_REGION_NAME).
    type: str
attributes:
  check_mode:
    support: full
    description: Reports whether anything would be uploaded, registered or deleted; with O(state=pruned) it lists the images that would be deleted.
  diff_mode:
    support: none
    description: Nothing to compare; the result says what was published or deleted.
notes:
  - A run that fails or is cancelled after the upload started deletes what it created unless
    O(keep_partial=true); a module killed outright (SIGKILL) cannot, and the next run with the same O(sha256)
    resumes or replaces what it left.
seealso:
  - module: osimage.builder.image_export
requirements:
  - boto3 for O(target=s3) and O(target=aws_ami)
  - azure-storage-blob, azure-identity and azure-mgmt-compute for O(target=azure)
  - google-cloud-storage and google-cloud-compute for O(target=gce)
  - openstacksdk for O(target=openstack_glance)
'''

EXAMPLES = r'''
- name: Put the qcow2 image into a bucket of an S3-compatible store
  osimage.builder.cloud_upload:
    target: s3
    src: output/debian-12-1.0.0/debian-12-1.0.0.qcow2
    sha256: "{{ artifact.sha256 }}"
    name: images/debian-12-1.0.0.qcow2
    s3:
      bucket: images
      endpoint_url: https://s3.example.org
  delegate_to: localhost

- name: Register an AMI from the raw image through the EBS direct APIs
  osimage.builder.cloud_upload:
    target: aws_ami
    src: output/debian-12-1.0.0/debian-12-1.0.0.raw
    name: debian-12-1.0.0
    family: debian-12
    aws_region: eu-central-1
    aws_ami:
      boot_mode: uefi-preferred
      share_with: ["123456789012"]

- name: Create a Compute Engine image from the gce output
  osimage.builder.cloud_upload:
    target: gce
    src: output/debian-12-1.0.0/debian-12-1.0.0.tar.gz
    name: debian-12-1-0-0
    family: debian-12
    gce:
      bucket: my-images
      guest_os_features: [UEFI_COMPATIBLE, VIRTIO_SCSI_MULTIQUEUE, GVNIC]

- name: Create a Glance image from the qcow2 output, with the cloud of clouds.yaml that OS_CLOUD names
  osimage.builder.cloud_upload:
    target: openstack_glance
    src: output/debian-12-1.0.0/debian-12-1.0.0.qcow2
    name: debian-12-1.0.0
    openstack_glance:
      properties:
        os_distro: debian
        hw_firmware_type: uefi

- name: Keep the three newest AMIs of the family, and list what would go
  osimage.builder.cloud_upload:
    target: aws_ami
    state: pruned
    name: debian-12
    family: debian-12
    keep_newest: 3
  check_mode: true
'''

RETURN = r'''
target:
  description: The target.
  returned: always
  type: str
id:
  description:
    - What was published - object key, AMI id, Azure image resource id (the blob URL without O(azure.resource_group)),
      Compute Engine image id, Glance image id.
  returned: state=present
  type: str
  sample: ami-0123456789abcdef0
url:
  description: Where the object or image can be found - the object's or blob's URL, the image's self link.
  returned: state=present, where the cloud has one
  type: str
sha256:
  description: The digest the published object or image carries.
  returned: state=present
  type: str
details:
  description:
    - Target-specific ids - C(etag), C(version_id) (s3); C(snapshot_id) (aws_ami); C(blob_url) (azure);
      C(object_url), C(bucket), C(object), C(project), C(family), C(status), C(image_id), C(object_deleted) (gce);
      C(disk_format), C(container_format), C(visibility), C(checksum), C(os_hash_value) (openstack_glance).
  returned: state=present
  type: dict
progress:
  description:
    - C(bytes_sent), C(bytes_skipped) (all-zero blocks not sent, or parts an interrupted run had sent),
      C(seconds), C(throughput) in bytes per second, C(retries).
  returned: state=present
  type: dict
  sample: {bytes_sent: 2147483648, bytes_skipped: 0, seconds: 41.2, throughput: 52123384, retries: 0}
resumed:
  description: Whether an upload that an earlier run left unfinished was continued.
  returned: state=present
  type: bool
deleted:
  description: The objects or images deleted (with O(state=absent) or O(state=pruned)), or that would be in check mode.
  returned: state=absent or state=pruned
  type: list
  elements: dict
kept:
  description: The images of the family that stay, newest first.
  returned: state=pruned
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.osimage.builder.plugins.module_utils._cloud import (
    CREDENTIAL_OPTIONS, TARGET_OPTIONS, TARGETS, Request)
from ansible_collections.osimage.builder.plugins.module_utils._cloud_aws import AwsAmiBackend
from ansible_collections.osimage.builder.plugins.module_utils._cloud_azure import AzureBackend
from ansible_collections.osimage.builder.plugins.module_utils._cloud_gce import GceBackend
from ansible_collections.osimage.builder.plugins.module_utils._cloud_glance import GlanceBackend
from ansible_collections.osimage.builder.plugins.module_utils._cloud_s3 import S3Backend
from ansible_collections.osimage.builder.plugins.module_utils._cancel import unwind_on_signals
from ansible_collections.osimage.builder.plugins.module_utils._errors import OsImageError

BACKENDS = {
    's3': S3Backend,
    'aws_ami': AwsAmiBackend,
    'azure': AzureBackend,
    'gce': GceBackend,
    'openstack_glance': GlanceBackend,
}


def argument_spec() -> dict:
    return dict(
        target=dict(type='str', required=True, choices=list(BACKENDS)),
        state=dict(type='str', default='present', choices=['present', 'absent', 'pruned']),
        src=dict(type='path'),
        sha256=dict(type='str'),
        name=dict(type='str', required=True),
        family=dict(type='str'),
        keep_newest=dict(type='int'),
        description=dict(type='str', default=''),
        tags=dict(type='dict', default={}),
        force=dict(type='bool', default=False),
        keep_partial=dict(type='bool', default=False),
        wait=dict(type='bool', default=True),
        wait_timeout=dict(type='int', default=1800),
        retries=dict(type='int', default=5),
        **{name: dict(type='dict', options=TARGET_OPTIONS[name]) for name in TARGETS},
        aws_access_key_id=dict(type='str', no_log=True, fallback=(env_fallback, ['AWS_ACCESS_KEY_ID'])),
        aws_secret_access_key=dict(type='str', no_log=True, fallback=(env_fallback, ['AWS_SECRET_ACCESS_KEY'])),
        aws_session_token=dict(type='str', no_log=True, fallback=(env_fallback, ['AWS_SESSION_TOKEN'])),
        aws_profile=dict(type='str', fallback=(env_fallback, ['AWS_PROFILE'])),
        aws_region=dict(type='str', fallback=(env_fallback, ['AWS_REGION', 'AWS_DEFAULT_REGION'])),
        azure_client_id=dict(type='str', fallback=(env_fallback, ['AZURE_CLIENT_ID'])),
        azure_secret=dict(type='str', no_log=True, fallback=(env_fallback, ['AZURE_SECRET', 'AZURE_CLIENT_SECRET'])),
        azure_tenant=dict(type='str', fallback=(env_fallback, ['AZURE_TENANT', 'AZURE_TENANT_ID'])),
        azure_subscription_id=dict(type='str', fallback=(env_fallback, ['AZURE_SUBSCRIPTION_ID'])),
        azure_storage_key=dict(type='str', no_log=True, fallback=(env_fallback, ['AZURE_STORAGE_KEY'])),
        gcp_credentials_file=dict(type='path', fallback=(env_fallback, [
            'GOOGLE_APPLICATION_CREDENTIALS', 'GCP_SERVICE_ACCOUNT_FILE', 'GCE_CREDENTIALS_FILE_PATH'])),
        gcp_credentials=dict(type='str', no_log=True, fallback=(env_fallback, ['GCP_SERVICE_ACCOUNT_CONTENTS'])),
        gcp_project=dict(type='str', fallback=(env_fallback, ['GOOGLE_CLOUD_PROJECT', 'GCP_PROJECT', 'GCE_PROJECT'])),
        openstack_cloud=dict(type='str', fallback=(env_fallback, ['OS_CLOUD'])),
        openstack_auth=dict(type='dict', no_log=True),
        openstack_region=dict(type='str', fallback=(env_fallback, ['OS_REGION_NAME'])),
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[('state', 'present', ['src']), ('state', 'pruned', ['family', 'keep_newest']),
                     ('target', 's3', ['s3']), ('target', 'azure', ['azure']),
                     ('target', 'gce', ['gce'])],
        supports_check_mode=True,
    )
    params = module.params
    target = params['target']
    request = Request(
        target=target, state=params['state'], name=params['name'], src=params['src'], sha256=params['sha256'],
        family=params['family'], keep_newest=params['keep_newest'], description=params['description'],
        tags={str(k): v for k, v in params['tags'].items()}, force=params['force'],
        keep_partial=params['keep_partial'], wait=params['wait'], wait_timeout=params['wait_timeout'],
        retries=params['retries'],
        options={name: params[name] for name in TARGETS},
        credentials={name: params[name] for name in CREDENTIAL_OPTIONS}, check_mode=module.check_mode)
    # A cancelled build (its worker passes SIGTERM on) still aborts an unfinished multipart upload or removes a
    # half-made image, as a failed upload does (unless keep_partial).
    unwind_on_signals()
    try:
        result = BACKENDS[target](request, warn=module.warn).run()
    except OsImageError as exc:
        module.fail_json(msg=exc.msg, target=target, **exc.context)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
