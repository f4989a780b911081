"""Run under torchrun (2 processes, gloo): NT-Xent with gathered negatives on each rank's half batch.

Writes the loss and the gradient of this rank's projections to OUT/rank{r}.pt.
"""

import sys

import torch
import torch.distributed as dist

from selfsup.losses import nt_xent

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
g = torch.Generator().manual_seed(0)
z1_all, z2_all = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
b = 8 // world
z1 = z1_all[rank * b : (rank + 1) * b].clone().requires_grad_(True)
z2 = z2_all[rank * b : (rank + 1) * b].clone().requires_grad_(True)
loss = nt_xent(z1, z2, temperature=0.5)
loss.backward()
torch.save({"loss": loss.detach(), "g1": z1.grad, "g2": z2.grad}, f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
