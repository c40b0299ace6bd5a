import os

# Keep XLA to the two cores of the CI machine and make test output deterministic.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
