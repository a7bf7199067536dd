"""Benchmarks of the engine against bare diffusers, on this CPU and on a lent GPU."""
