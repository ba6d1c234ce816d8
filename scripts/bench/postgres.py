"""PostgreSQL: images/s of `platepipe run` on PostgreSQL and on SQLite, same files, same
emulator, within one run; the figure is their ratio."""

from __future__ import annotations

from scripts.bench.common import TARGETS, UNPACED_RATE_PER_S, Bench

NAME = "postgres"
SIZES = ("images",)


def measure(bench: Bench) -> None:
    sizes, m = bench.sizes, NAME
    if not bench.postgres_reachable(m):
        return
    pg_url = bench.postgres_database()

    tree = bench.tree(sizes.images, distinct=True)
    emulator = bench.emulator()
    runs = {}
    for label, db_url in (("SQLite", bench.sqlite_url("sqlite")), ("PostgreSQL", pg_url)):
        run = bench.run_job(
            db_url, emulator, [tree.root], rate=UNPACED_RATE_PER_S, expect=tree.files
        )
        runs[label] = run
        bench.figure(
            m,
            f"run on {label}",
            run.describe(),
            run.per_s,
        )
    ratio = runs["PostgreSQL"].per_s / runs["SQLite"].per_s
    steady = runs["PostgreSQL"].per_s_after_startup / runs["SQLite"].per_s_after_startup
    bench.figure(
        m,
        "PostgreSQL / SQLite",
        f"{ratio:.2f} ({steady:.2f} after start-up)",
        ratio,
        target=f">= {TARGETS['postgres_vs_sqlite']:g}",
        passed=ratio >= TARGETS["postgres_vs_sqlite"],
    )
