"""Device bench (`pacb_edge.device_bench`): host, Jetson and Android runners sharing one result record."""
