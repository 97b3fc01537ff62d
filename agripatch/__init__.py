"""agripatch: crop disease recognition with AnchorNet semantic patches.

A padding-free CNN (AnchorNet) scores every box of a photo, a downstream classifier reads the top-K
boxes cut from the full-resolution photo, and a glance + patches cascade stops as soon as it is sure.
"""

__version__ = "0.1.0"
