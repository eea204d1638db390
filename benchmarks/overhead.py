"""The harness's own overhead: its samples/s over a plain hand-written loop's, interleaved in
one process. A drop here is a regression in batchbench itself, not in the code it measures."""

from .common import pin


class HarnessOverhead:
    params = [[1, 32]]
    param_names = ["batch_size"]
    timeout = 900

    def setup(self, batch_size):
        pin()

    def track_overhead_ratio(self, batch_size):
        from harness.overhead import compare

        return compare(batch_size, rounds=11).ratio

    track_overhead_ratio.unit = "harness/plain"
