"""NeuronOS VM Manager: libvirt VMs with GPU passthrough and Looking Glass.

One folder per layer: the faces ``cli`` and ``gui`` call ``actions``, which use the managers
in ``core``; those use ``passthrough``, ``templates``, ``guest``, ``doctor`` and ``display``;
everything stands on ``base`` (pyproject's import contracts keep it so).
"""

__version__ = "0.1.0"
