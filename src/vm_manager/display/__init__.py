"""The Looking Glass client: its command line and process (``lg_client``), and reading the
guest host application's shared memory header (``lgmp``). The supervisor that follows a VM
is ``core.looking_glass``."""
