"""One process of a training run: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) for DDP
(NCCL on GPUs, gloo on CPU), or a single process."""
from __future__ import annotations

import os

import torch


class Distributed:
    """torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""

    def __init__(self, device: str | None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        if cuda:
            self.device = torch.device(f"cuda:{self.local_rank}" if self.world > 1 or device in (None, "cuda")
                                       else device)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device(device or "cpu")
        if self.world > 1:
            import datetime

            # Rank 0 evaluates while the others wait at a barrier: allow a long evaluation.
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                                 timeout=datetime.timedelta(hours=3))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, items: list) -> list:
        if self.world == 1:
            return items
        gathered = [None] * self.world
        torch.distributed.all_gather_object(gathered, items)
        return [x for part in gathered for x in part]

    def close(self):
        if self.world > 1:
            torch.distributed.destroy_process_group()
