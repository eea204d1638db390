"""Peak memory of training steps (asv's peakmem_ measures the process's peak RSS)."""

import torch

from .common import pin, require


class TrainingStepMemory:
    params = [[64, 1024], ["cpu"]]
    param_names = ["batch_size", "device"]

    def setup(self, batch_size, device):
        require(device)
        pin()
        from harness.spec import build_spec
        from harness.sweep import plan

        self.plan = plan(build_spec(cli_values={"dataset": "mnist-like", "dataset_sizes": "2000", "batch_sizes": str(batch_size), "devices": device,
                                                "hidden": "512", "steps": "3", "sample_interval": "0", "threads": "1"}))

    def peakmem_training_step(self, batch_size, device):
        from harness.train import run_point

        (run,) = self.plan.runs
        run_point(run, self.plan.splits[run.dataset_size], self.plan.factory)
