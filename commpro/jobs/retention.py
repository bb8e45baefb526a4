"""The retention of finished jobs: a recurring job of the queue itself."""

from __future__ import annotations

from commpro.jobs import Kind, retention_kind, store
from commpro.settings import Config


def jobs_retention(config: Config) -> Kind:
    return retention_kind("jobs-retention", store.delete_finished, config.jobs.retention_s,
                         config.jobs.retention_interval_s)
