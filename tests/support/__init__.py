"""Test and demo helpers that are not part of the shipped package.

``fakes``: libvirt test-driver hosts (node files), sysfs trees shaped like the kernel's, a
fake Looking Glass host. ``tiny_guest``: the tiny real guest (kernel + busybox initramfs)
for the end-to-end tests, the benchmarks and ``make demo``. ``domains``: hand-written
domain XML for tests that need a domain no template makes.

Scripts outside ``tests/`` put this folder's parent on ``sys.path`` to import it.
"""
