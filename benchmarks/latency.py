from benchmarks.common import Row
def pickup_latency() -> list[Row]: return []
def retry_punctuality() -> list[Row]: return []
