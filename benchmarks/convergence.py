"""Steps and time to a target loss on a small deterministic workload (seeded least squares):
the step count changes only when the optimisation itself does."""

from .common import pin, require, measured_row


class StepsToTarget:
    params = [[4, 32], ["cpu", "cuda"]]
    param_names = ["batch_size", "device"]
    timeout = 600

    def setup_cache(self):
        pin()
        return {
            (batch, device): measured_row(dataset="linreg", model="linear", dataset_sizes=1000, batch_sizes=batch, devices=device,
                                       lr=0.25, steps=1000, check_every=1, target_loss=0.02, stop_at_target="true", burn_in_steps=0)
            for batch in (4, 32) for device in ("cpu",)
        }

    def setup(self, points, batch_size, device):
        require(device)
        self.point = points.get((batch_size, device)) or measured_row(
            dataset="linreg", model="linear", dataset_sizes=1000, batch_sizes=batch_size, devices=device,
            lr=0.25, steps=1000, check_every=1, target_loss=0.02, stop_at_target="true", burn_in_steps=0)

    def track_steps_to_target(self, points, batch_size, device):
        return self.point["steps_to_target"]

    def track_time_to_target_s(self, points, batch_size, device):
        return self.point["time_to_target_s"]

    track_steps_to_target.unit = "steps"
    track_time_to_target_s.unit = "seconds"
