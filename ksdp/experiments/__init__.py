"""The paper's experiments (Section 4). Run ``python -m ksdp.experiments --help``."""
