"""Pictures and videos: tracks on frames, predictions, routing heatmaps."""
