"""Peak memory of training steps (asv's peakmem_ measures the process's peak RSS)."""


from .common import pin, require


class TrainingStepMemory:
    params = [[64, 1024], ["cpu"]]
    param_names = ["batch_size", "device"]

    def setup(self, batch_size, device):
        require(device)
        pin()
        from harness.drivers.plan import plan_flags

        self.plan = plan_flags(dataset="mnist-like", dataset_sizes=2000, batch_sizes=batch_size, devices=device, hidden=512, steps=3,
                               sample_interval=0, threads=1)

    def peakmem_training_step(self, batch_size, device):
        from harness.run.engine import run_point

        (point,) = self.plan.points
        run_point(point, self.plan.workload(point))
