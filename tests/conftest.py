import gc
import os

import pytest

# Keep XLA to the two cores of the CI machine and make test output deterministic.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

# Compilation dominates the suite's time, and the same programs compile in both xdist workers, again in
# each module after `_release_compiled_programs`, and in the subprocesses of the docs and multi-device
# tests: JAX's persistent cache (set through the environment, so the subprocesses share it) compiles each
# once per run. It lives in the ignored ksdp-runs/ folder; a fresh clone starts it empty.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, "ksdp-runs", "jax-test-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# tests/multidevice needs several devices, which only a fresh interpreter can have: it runs from
# tests/test_parallel.py (KSDP_MULTIDEVICE=1 with forced CPU devices), never in the main session.
collect_ignore = [] if os.environ.get("KSDP_MULTIDEVICE") else ["multidevice"]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program at the end of each test module.

    An XLA:CPU executable holds about three memory mappings for its code, and jit caches keep every
    executable alive, so the whole suite (tens of thousands of programs) reached the kernel's limit of
    65530 mappings per process (``vm.max_map_count``), where XLA's compiler aborts or segfaults in
    whichever compilation comes next (measured: 64724 mappings just before such a crash). Clearing
    the caches between modules brings the process back to about 1200 mappings after each module
    (the suite's peak, within a module: about 15600) and cost 2 s over three modules (126 against
    124 s): a module's jitted fixtures are reused within the module, never across modules.
    """
    yield
    import jax

    jax.clear_caches()
    gc.collect()
