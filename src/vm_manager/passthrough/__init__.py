"""Host hardware for guests: PCI/GPU and USB passthrough, Looking Glass shared memory.

Every reader of /sys, /proc and /dev takes a host root (default "/", or
``$NEURONOS_HOST_ROOT``) so tests run against sysfs trees built in a temporary folder.
"""
