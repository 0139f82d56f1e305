"""Studies: scripts that train several models and tabulate what they show.

Run one as `python -m meshlm.experiments.studies.NAME`."""
