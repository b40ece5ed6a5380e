# One entry point for a fresh Debian 12 machine (run as root, or with sudo for
# the apt step). `make test` installs what it needs and runs the whole suite.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c

VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
# ansible-test only runs from a tree laid out as ansible_collections/NAMESPACE/NAME.
COLL ?= $(CURDIR)/.tmp/ansible_collections/osimage/builder
RESULTS ?= $(CURDIR)/.tmp/results
# e.g. make integration TARGETS=qemu_vm
TARGETS ?=
# What a build needs on a Debian build host, and what the tests need besides.
BUILD_PACKAGES := qemu-system-x86 qemu-utils ovmf mmdebstrap fdisk dosfstools mtools e2fsprogs zstd xz-utils pigz \
	openssh-client python3-venv git make
TEST_PACKAGES := linux-image-amd64 busybox-static cpio shellcheck curl python3-dev gcc gnupg signify-openbsd minisign libxml2-utils \
	extlinux syslinux-common iproute2 procps ostree
APT_PACKAGES ?= $(BUILD_PACKAGES) $(TEST_PACKAGES)

.PHONY: azurite glance build e2e e2e-openbsd test fresh-results setup apt venv get-pip-standin collection sanity units integration lint changelog-lint clean

# Build the default image (blueprints/debian-12.yml) into ./output/.
build:
	$(MAKE) apt venv APT_PACKAGES="$(BUILD_PACKAGES)"
	$(VENV)/bin/ansible-playbook build-image.yml $(BUILD_ARGS)

test: fresh-results setup sanity units lint integration e2e e2e-kill
	# One closing line for the whole suite, from the counts each stage recorded.
	cat $(RESULTS)/*.count | awk '{p += $$1} END {printf "test: %d passed, 0 failed\n", p}'

setup: apt venv

fresh-results:
	rm -rf $(RESULTS)

apt:
	missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done)
	if [ -n "$$missing" ]; then
	  echo "installing: $$missing"
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo
	  $$SUDO apt-get update -q
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing
	fi

$(VENV)/.installed: tests/requirements.txt tests/requirements-cloud.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r tests/requirements.txt -r tests/requirements-cloud.txt
	touch $@

venv: $(VENV)/.installed

# ansible-test --venv bootstraps pip with a get-pip.py from a host outside the
# package registries; it takes a cached copy first, and tests/utils has a stand-in.
get-pip-standin: venv
	version=$$(sed -n "s/^ *pip='\([0-9.]*\)',/\1/p" $$($(PY) -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py)
	mkdir -p $(HOME)/.ansible/test/cache
	cp tests/utils/get_pip_standin.py $(HOME)/.ansible/test/cache/get_pip_$${version//./_}.py

collection:
	rm -rf $(COLL)
	mkdir -p $(COLL)
	git ls-files -z --cached --others --exclude-standard | grep -zv '^\.collections/' | \
	  while IFS= read -r -d '' f; do [ -e "$$f" ] || [ -L "$$f" ] && printf '%s\0' "$$f"; done | \
	  cpio -0 -pdm --quiet $(COLL)
	# A repository of its own, so that ansible-test lists these files rather than
	# seeing them as ignored files of the checkout around them.
	cd $(COLL) && git init -q && git add -A

sanity: get-pip-standin collection
	mkdir -p $(RESULTS)
	cd $(COLL) && $(VENV)/bin/ansible-test sanity --venv --python 3.11 --color no 2>&1 | tee $(RESULTS)/sanity.log
	grep -c '^Running sanity test' $(RESULTS)/sanity.log > $(RESULTS)/sanity.count

units: venv
	mkdir -p $(RESULTS)
	PYTHONPATH=$(CURDIR)/.collections $(PY) -m pytest -q tests/unit 2>&1 | tee $(RESULTS)/units.log
	sed -n 's/^\([0-9]*\) passed.*/\1/p' $(RESULTS)/units.log > $(RESULTS)/units.count

lint: venv
	$(VENV)/bin/ansible-lint --profile production
	$(VENV)/bin/antsibull-changelog lint

# Azurite (the Azure Storage emulator) comes from the npm registry; nodejs and npm from Debian
# unless the machine has them already.
NODE_DIR ?= $(CURDIR)/.tmp/node
AZURITE_VERSION := 3.35.0
azurite:
	if ! command -v npm >/dev/null; then $(MAKE) apt APT_PACKAGES="nodejs npm"; fi
	if [ ! -x $(NODE_DIR)/node_modules/.bin/azurite-blob ]; then
	  npm install --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)
	fi

# Glance (OpenStack's image service), run for real by the cloud_upload tests, in a venv of its own
# because its dependencies pin other versions than ours; the tests find its Python on PATH as
# osimage-glance-python (ansible-test passes PATH to the tests, and no other variable).
GLANCE_VENV ?= $(CURDIR)/.tmp/glance-venv
TOOLS_BIN ?= $(CURDIR)/.tmp/bin
$(GLANCE_VENV)/.installed: tests/requirements-glance.txt
	rm -rf $(GLANCE_VENV)
	python3 -m venv $(GLANCE_VENV)
	$(GLANCE_VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements-glance.txt
	touch $@
glance: $(GLANCE_VENV)/.installed
	mkdir -p $(TOOLS_BIN)
	printf '#!/bin/sh\nexec %s "$$@"\n' $(GLANCE_VENV)/bin/python > $(TOOLS_BIN)/osimage-glance-python
	chmod 755 $(TOOLS_BIN)/osimage-glance-python

integration: venv collection azurite glance
	mkdir -p $(RESULTS)
	cd $(COLL) && PATH=$(VENV)/bin:$(NODE_DIR)/node_modules/.bin:$(TOOLS_BIN):$$PATH $(VENV)/bin/ansible-test integration --local --python 3.11 --color no $(TARGETS) 2>&1 \
	  | tee $(RESULTS)/integration.log
	grep -c '^Running .* integration test role' $(RESULTS)/integration.log > $(RESULTS)/integration.count

# The end-to-end test: build blueprints/debian-12.yml with a test user, a provisioning
# role and more; the build boots the exported image as a user would and checks it
# over SSH (image_test), and verify.yml checks the output directory. It runs at the same
# time as the OpenBSD vmm flow through the stand-ins and a run of build-image.yml over two
# inventory entries (tests/e2e/parallel.sh): four builds at once. E2E_PARALLEL_RUNS="A B" runs a subset.
E2E_DIR ?= $(CURDIR)/.tmp/e2e
E2E_PARALLEL_RUNS ?= A B C
e2e: venv
	mkdir -p $(RESULTS)
	rm -rf $(E2E_DIR)
	export E2E_DIR=$(E2E_DIR) ANSIBLE_ROLES_PATH=$(CURDIR)/tests/e2e/roles
	RESULTS=$(RESULTS) bash tests/e2e/bad_input.sh
	# The build publishes its qcow2 to a moto S3 server on loopback (the blueprint's publish list);
	# the credentials come from the environment, as AWX's AWS credential sets them.
	background="$(PY) tests/integration/targets/cloud_upload/files/background.py"
	trap '$$background stop-all $(E2E_DIR)/servers' EXIT
	export E2E_S3_URL=$$($$background start $(E2E_DIR)/servers moto --lease 3600 -- $(PY) -m moto.server -H 127.0.0.1 -p {port} \
	  | $(PY) -c 'import json, sys; print(json.load(sys.stdin)["url"])')
	export AWS_ACCESS_KEY_ID=e2e-access-key AWS_SECRET_ACCESS_KEY=e2e-Secret-aws-key AWS_DEFAULT_REGION=us-east-1
	# prepare.yml, then the builds at once: A the Debian e2e build (then verify.yml and no_secrets.sh),
	# B the OpenBSD vmm flow through the stand-ins of tests/standins/, C one run over two inventory entries.
	E2E_PARALLEL_RUNS="$(E2E_PARALLEL_RUNS)" bash tests/e2e/parallel.sh
	# one per build: run C builds two
	echo $(words $(E2E_PARALLEL_RUNS) $(filter C,$(E2E_PARALLEL_RUNS))) > $(RESULTS)/e2e.count

# Only the OpenBSD vmm flow through the stand-ins.
e2e-openbsd: venv
	mkdir -p $(E2E_DIR)
	E2E_DIR=$(E2E_DIR) bash tests/e2e/openbsd_stand_in.sh

clean:
	rm -rf .tmp tests/output .ansible

# Kill tests of a real build, one kill per stage (Debian: bootstrap, first_boot, provision, export,
# image_test, publish; OpenBSD through the stand-ins: install) with SIGINT, SIGTERM and SIGKILL:
# afterwards nothing of the build runs, stays mounted or shows under its final name, and
# playbooks/cleanup.yml removes the rest at once. Part of make test.
KILL_DIR ?= $(CURDIR)/.tmp/kill
.PHONY: e2e-kill
e2e-kill: venv
	mkdir -p $(RESULTS)
	KILL_DIR=$(KILL_DIR) RESULTS=$(RESULTS) VENV=$(VENV) bash tests/e2e/kill_stages.sh
