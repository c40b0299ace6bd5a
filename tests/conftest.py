import os

# Keep XLA to the two cores of the CI machine and make test output deterministic.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

# tests/multidevice needs several devices, which only a fresh interpreter can have: it runs from
# tests/test_parallel.py (KSDP_MULTIDEVICE=1 with forced CPU devices), never in the main session.
collect_ignore = [] if os.environ.get("KSDP_MULTIDEVICE") else ["multidevice"]
