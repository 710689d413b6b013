"""Is this host ready (``neuron-vm doctor``): the local checks (sysfs, /dev, programs, the
desktop user's groups, the Qt libraries) and a remote host's, judged from its libvirt."""
