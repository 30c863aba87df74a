"""The torch layer: a model replica bound to the flat vector, training steps, the chunk loops.

No distributed, no zarr: a chunk's rows arrive as arrays.
"""

from __future__ import annotations

from psdist.replica.replica import Replica, as_model_dict, layout_of

__all__ = ["Replica", "as_model_dict", "layout_of"]
