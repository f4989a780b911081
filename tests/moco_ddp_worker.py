"""Run under torchrun (2 processes, gloo): two MoCo training steps under DDP with shuffle BN.

Each rank trains on its own images. Writes to OUT/rank{r}.pt: the queue and its pointer, this rank's
keys of each step (as the loss used them), the keys of step 1 that its images would get without shuffle
BN, and the final weights.
"""

import sys

import torch
import torch.distributed as dist
from conftest import make_method  # tests/ is this script's folder, first on sys.path
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.set_num_threads(1)
method = make_method("moco", image_size=16, num_samples=200)  # seed 0 on both ranks: the same weights and queue
model = DDP(method)
opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1, momentum=0.9)

keys = []
keys_fn = method.keys


def recording_keys(x, seed, perm=None):
    k, k_all = keys_fn(x, seed, perm)
    keys.append(k.clone())
    return k, k_all


method.keys = recording_keys
g = torch.Generator().manual_seed(100 + rank)
unshuffled = None
for step in range(2):
    x = torch.randint(0, 256, (8, 1, 20, 20), dtype=torch.uint8, generator=g)
    views = method.views(x, g)
    if step == 0:
        unshuffled = method.key(views[1])
    out = model(views)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    method.after_step(step, 2)

params = {k: v.detach() for k, v in method.named_parameters()}
result = {"queue": method.queue, "ptr": method.queue_ptr, "keys": keys, "unshuffled_keys": unshuffled, "params": params}
torch.save(result, f"{sys.argv[1]}/rank{rank}.pt")
dist.destroy_process_group()
