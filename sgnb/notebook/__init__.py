"""The notebook room: the kernel's session, the ``%sglang`` magics, cell helpers and rich views."""
