LatencyTable = build_latency_table = None
