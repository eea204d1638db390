"""The harness's own overhead: its samples/s over a plain hand-written loop's doing the same
work (loss checks and data placement included), interleaved in one process. A drop here is a
regression in batchbench itself, not in the code it measures."""

from .common import pin, require


class HarnessOverhead:
    params = [[1, 32, 512], ["cpu", "cuda"]]
    param_names = ["batch_size", "device"]
    timeout = 900

    def setup(self, batch_size, device):
        require(device)
        pin()

    def track_overhead_ratio(self, batch_size, device):
        from harness.drivers.overhead import against_plain

        return against_plain(batch_size, rounds=11, device=device).ratio

    track_overhead_ratio.unit = "harness/plain"
