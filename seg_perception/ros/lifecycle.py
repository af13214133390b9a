"""``seg_lifecycle_node``: :class:`.node.SegNode` started unconfigured (a managed node).

Kept as a module of its own so ``python -m seg_perception.ros.lifecycle`` runs it as the
console script does; the node and what its states mean are in :mod:`.node`.
"""

from __future__ import annotations

from seg_perception.ros.node import lifecycle_main as main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
