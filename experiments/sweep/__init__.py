"""Scaling-law sweeps: run a grid of training runs, fit scaling laws to their losses, report."""
