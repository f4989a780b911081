"""Run under torchrun (2 processes, gloo): NT-Xent with gathered negatives on each rank's half batch, and the
global BatchNorm (SimCLR's sync BN under DDP) on each rank's half batch.

Writes to OUT/rank{r}.pt: the loss and the gradient of this rank's projections; the global BN's output,
input gradient and running statistics.
"""

import sys

import torch
import torch.distributed as dist

from selfsup.distributed import convert_global_bn
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

x_all = torch.randn(8, 3, 4, 4, generator=g) * 2 + 1
torch.manual_seed(0)
bn = convert_global_bn(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
with torch.no_grad():
    bn[0].weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    bn[0].bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
x = x_all[rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
y = bn(x)
(y * torch.arange(y.numel()).view_as(y).float()).sum().backward()
out = {"loss": loss.detach(), "g1": z1.grad, "g2": z2.grad, "bn_y": y.detach(), "bn_gx": x.grad,
       "bn_mean": bn[0].running_mean, "bn_var": bn[0].running_var}  # fmt: skip
torch.save(out, f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
