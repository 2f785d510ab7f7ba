"""What the commands run: the pipeline, the cell engine, the demo, the paper grids, latency budgets."""
