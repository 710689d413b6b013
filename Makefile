# NeuronOS VM Manager. Quick start: `make demo`, then `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-newest bench screenshots clean

## setup: Debian packages, /dev/kvm group, libvirtd running, .venv with the package
setup:
	bash scripts/setup-host.sh

## demo: set everything up, then run the main job on qemu:///system
demo: setup
	bash scripts/demo.sh

## test: the import contracts (layers, faces, no cycles), then the whole test suite (daemon
## tests skip with a reason when libvirtd is not up, outside CI)
test: $(PY)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

## test-newest: the whole suite again on Debian 13's libvirt 11 and QEMU 10, in a chroot of
## its own (root; the chroot is kept in /var/cache/neuronos/debian-13 between runs)
test-newest:
	bash scripts/newest-platform.sh test

$(PY):
	bash scripts/setup-host.sh

## bench: the benchmarks under bench/, each prints its figures (event_latency and
## create_time need libvirtd; create_time also Debian's virtinst)
bench: $(PY)
	$(PY) bench/list_latency.py
	$(PY) bench/event_latency.py
	$(PY) bench/create_time.py
	$(PY) bench/setup_media.py
	$(PY) bench/snapshots.py
	$(PY) bench/shares.py
	$(PY) bench/gui_scale.py
	$(PY) bench/remote_media.py
	$(PY) bench/cpu_plan.py

## screenshots: render the GUI's windows to docs/screenshots (offscreen)
screenshots: $(PY)
	$(PY) scripts/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis src/*.egg-info
