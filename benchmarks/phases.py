"""Phase costs of a training step, from the harness's clock, across batch size, dataset size
and device. One harness run per parameter set feeds every ``track_`` metric (``setup_cache``)."""

import itertools

import torch

from .common import pin, require, measured_row

BATCH_SIZES = [1, 32, 256]
DATASET_SIZES = [1000, 10000]
DEVICES = ["cpu", "cuda"]


class TrainingStep:
    params = [BATCH_SIZES, DATASET_SIZES, DEVICES]
    param_names = ["batch_size", "dataset_size", "device"]
    timeout = 600

    def setup_cache(self):
        pin()
        points = {}
        for batch, size, device in itertools.product(BATCH_SIZES, DATASET_SIZES, DEVICES):
            if device == "cuda" and not torch.cuda.is_available():
                continue
            points[(batch, size, device)] = measured_row(
                dataset="mnist-like", dataset_sizes=size, batch_sizes=batch, devices=device, model="mlp", hidden="128", steps=300, lr=0.01
            )
        return points

    def setup(self, points, batch_size, dataset_size, device):
        require(device)
        pin()
        self.point = points[(batch_size, dataset_size, device)]

    def track_data_s(self, points, batch_size, dataset_size, device):
        return self.point["data_s"]

    def track_derivative_s(self, points, batch_size, dataset_size, device):
        return self.point["derivative_s"]

    def track_update_s(self, points, batch_size, dataset_size, device):
        return self.point["update_s"]

    def track_loss_check_s(self, points, batch_size, dataset_size, device):
        return self.point["loss_check_s"]

    def track_time_per_sample_s(self, points, batch_size, dataset_size, device):
        """1 / samples per second: asv ranks every track_ value lower-is-better, so a rate is tracked as its cost."""
        return 1.0 / self.point["samples_per_s"]

    track_data_s.unit = track_derivative_s.unit = track_update_s.unit = track_loss_check_s.unit = track_time_per_sample_s.unit = "seconds"
