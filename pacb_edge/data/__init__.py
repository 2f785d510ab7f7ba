"""Data sets: the sources on disk, their preprocessing and the recorded splits."""
