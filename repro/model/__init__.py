"""Perceiver AR model.

Shape letters used in tensor names throughout the code (``x_BxLxD``):

    B  batch                      L  input (context) length, official max_context_length
    M  latents (the last M inputs) D  latent width (num_z_channels)
    Di input embedding width      H  heads            K  channels per head
    V  vocabulary                 P  position dimensions (1, or 3 for (x, y, channel))
    T  a generic sequence axis    C  a chunk of queries, G  head groups
"""

from repro.model.perceiver_ar import PerceiverAR, count_params

__all__ = ["PerceiverAR", "count_params"]
