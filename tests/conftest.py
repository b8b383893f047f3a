"""Test-wide settings."""

import torch

# Tiny networks: intra-op threads only add synchronisation (very slow on small, busy machines).
torch.set_num_threads(1)
