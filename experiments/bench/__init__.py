"""Benchmarks (`meshlm bench KIND`): each module measures one thing and returns a dict with a `text` formatter;
contestants take turns in one run (timing.interleaved) and rates are read against probes taken in the same run."""
