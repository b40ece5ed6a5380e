#!/usr/bin/env bash
# No plaintext secret of the e2e build in anything the build wrote or printed: the Ansible output of the
# build (build-output.log), the output directory (manifest, published.json, checksums, logs), the build's
# work and cache directories (console transcripts, server logs). Disk images are skipped: the image holds
# the password's hash by design, and compressed images are no text to search.
# usage: E2E_DIR=... no_secrets.sh SINCE_FILE DIR...
set -euo pipefail
since=$1
shift
secrets=(
  "e2e-Secret-pw"                                 # users[0].password of the test blueprint (prepare.yml)
  "e2e-Secret-aws-key"                            # AWS_SECRET_ACCESS_KEY of the publish step (Makefile)
  "$(sed -n 2p "$E2E_DIR/signify.sec")"           # the signing key's secret line
  "PRIVATE KEY-----"                              # any PEM or OpenSSH private key, the build's SSH key among them
)
found=0
files=$(find "$@" -type f -newer "$since" \
  ! -name '*.qcow2' ! -name '*.raw' ! -name '*.raw.*' ! -name '*.img' ! -name '*.vmdk' ! -name '*.vhd' \
  ! -name '*.vhdx' ! -name '*.tar.gz' ! -name '*.box' ! -name '*.ova' ! -name '*.zst' ! -name '*.xz' \
  ! -name '*.fd' 2>/dev/null | sort)
count=$(printf '%s\n' "$files" | grep -c . || true)
for secret in "${secrets[@]}"; do
  [ -n "$secret" ] || continue
  while IFS= read -r f; do
    [ -n "$f" ] || continue
    if grep -a -q -F -e "$secret" "$f"; then
      echo "no_secrets: ${secret:0:12}... appears in $f" >&2
      found=1
    fi
  done <<< "$files"
done
if [ "$found" -ne 0 ]; then
  exit 1
fi
echo "no_secrets: ${#secrets[@]} secrets searched in $count files the build wrote or printed, none found"
