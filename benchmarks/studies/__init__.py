"""Design studies: what each choice of the method pages was measured against (``python -m
benchmarks.studies --help``)."""
