"""The ground floor: errors, atomic files, consoles, worker processes, run configs, ssh, plots, runtimes."""
