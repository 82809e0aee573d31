"""HA-CNN's interface in numbers, importable without torch.

The embedding size and the network's input shape are needed by code that must stay light (the match stage and
``reid.identity`` never import torch; the inference backends check batches against them), so they live here
rather than in :mod:`reid.model`, which re-exports them and builds the network from them.
"""

from __future__ import annotations

INPUT_HEIGHT = 160
INPUT_WIDTH = 64
INPUT_SHAPE: tuple[int, int, int] = (3, INPUT_HEIGHT, INPUT_WIDTH)  # channels, height, width of one RGB crop
FEAT_DIM = 512  # each of the global and local branches
EMBEDDING_DIM = 2 * FEAT_DIM  # the embedding is the two L2-normalised branch features side by side
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB input normalisation, applied inside the network
IMAGENET_STD = (0.229, 0.224, 0.225)
