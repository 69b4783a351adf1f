"""Names for the arrays that flow through the detector, with their shapes."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

Frame: TypeAlias = NDArray[np.uint8]  # (H, W, 3) RGB
Clips: TypeAlias = NDArray[np.uint8]  # (N, T, S, S, 3) RGB, or one clip (T, S, S, 3)
Boxes: TypeAlias = NDArray[np.float64]  # (..., 4) as x0, y0, x1, y1 pixels
Mask: TypeAlias = NDArray[np.bool_]
Points: TypeAlias = NDArray[np.float64]  # (K, 2) x, y pixels, e.g. face landmarks
Weights: TypeAlias = NDArray[np.float32]  # (H, W) soft mask in [0, 1]
Scores: TypeAlias = NDArray[np.float32]  # (N,) P(fake), or logits
