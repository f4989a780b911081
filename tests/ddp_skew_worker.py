"""Run under torchrun (2 processes, gloo): a duration budget and time-based checkpoints while rank 1's clock
runs 3x fast (and 5 s ahead) and its steps are slower. Each rank writes OUT/rank{r}.json: the step count it
trained, its sync-BN state and the steps at which it saved or waited at a checkpoint barrier."""

import json
import os
import sys
import time

from torch import nn

import selfsup
import selfsup.train.loop as loop
from selfsup.distributed import GlobalBatchNorm
from selfsup.methods.simclr import SimCLR

out = sys.argv[1]
rank = int(os.environ["RANK"])
saves, seen = [], {}
if rank == 1:
    real = time.perf_counter
    start = real()

    class SkewedClock:  # the loop reads time through its module's `time`
        @staticmethod
        def perf_counter():
            return start + 5.0 + 3.0 * (real() - start)

    loop.time = SkewedClock
    forward = SimCLR.forward

    def slow_forward(self, batch):
        time.sleep(0.02)
        return forward(self, batch)

    SimCLR.forward = slow_forward

real_save, real_fit = loop.Trainer._save, loop.Trainer.fit


def save(self, step):
    saves.append(step)
    real_save(self, step)


def fit(self):
    seen["sync_bn"] = any(isinstance(m, nn.SyncBatchNorm | GlobalBatchNorm) for m in self.method.modules())
    return real_fit(self)


loop.Trainer._save, loop.Trainer.fit = save, fit
run = selfsup.pretrain(data="digits", method="simclr", width=8, batch_size=32, budget="8s", checkpoint_every="1s",
                       device="cpu", out=f"{out}/run", log=lambda s: None)  # fmt: skip
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"steps": run.config.train.steps, "saves": saves, "sync_bn_config": run.config.train.sync_bn, **seen}, f)
