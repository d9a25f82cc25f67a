"""The tiny space and quick latency protocol that the end-to-end and bad-input tests build their run folders on."""

TINY = {
    "description": "test space", "input_size": 16, "in_channels": 3, "num_classes": 10,
    "stem": [{"type": "conv", "kernel": 3, "stride": 2, "out_channels": 8, "act": "relu"}],
    "head": {"channels": 32, "act": "relu", "dropout": 0.0},
    "choices": {"type": ["ir"], "kernel": [3, 5], "expansion": [2], "depth": [1, 2], "se": [0.0], "act": ["relu"]},
    "slots": [{"stride": 1, "out_channels": 8}, {"stride": 2, "out_channels": 16}],
}
QUICK_PROTOCOL = {"min_time_s": 0.01, "max_time_s": 0.5, "min_samples": 20, "warmup_max_s": 0.2}
