"""Test-wide settings."""

import torch

# The tests use tiny networks: one thread avoids oversubscription on small shared CI machines.
torch.set_num_threads(1)
