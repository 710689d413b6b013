"""The base layer: what every other layer stands on, and nothing above it.

Errors, value types (``VMConfig``, ``PCIAddress``, ``VMState``), the libvirt connection and
its events, saved settings, the one reader (``domain_xml``) and the one editor
(``domain_merge``) of domain XML, file access rules, logging and the UI-thread guard. A
module here imports only other modules here (the import contracts check it).
"""
