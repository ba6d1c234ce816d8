"""The benchmarks of issues 5, 6 and 13: rate, concurrency, overhead, scale, PostgreSQL, workers.

Run from the repository root:

    python -m scripts.bench rate                    # ~35 s: --rate 40 against a 40/s limit
    python -m scripts.bench rate --rate 200 --duration 15 --concurrency 48
    python -m scripts.bench auto                    # ~70 s: no --concurrency, slow and fast API
    python -m scripts.bench overhead                # bare aiohttp loop vs run vs xargs curl
    python -m scripts.bench scale --files 1000000   # scan, status, resume, peak RSS: minutes
    python -m scripts.bench postgres                # run on PostgreSQL vs SQLite
    python -m scripts.bench workers                 # 4 `work` processes against 1
    python -m scripts.bench dedupe                  # copies cost no call, a touched tree none
    python -m scripts.bench all --quick             # every one at tiny sizes (the smoke test)

Each measurement starts what it needs on 127.0.0.1 (the bundled emulator and scratch PostgreSQL
databases through tests/support, `platepipe` as a user runs it), makes its files in a temporary
folder, prints its figures with the target and PASS or FAIL, and removes everything it made. No
traffic leaves the machine.

Every figure is one stdout line, `[measurement] what: figure`, followed by `(target ...)` and
PASS or FAIL where an issue sets a target; `--json FILE` writes them out as well. The exit code
is 0 when every measurement ran, whatever the verdicts (`--strict`: 1 on a FAIL), and 1 when one
could not run.

    common      sizes, targets, figures, and Bench: the servers, databases, files of one run
    probes      a `platepipe` child (wall time, peak RSS), CPU per image, the calls' window
    files       trees of tiny JPEGs
    rate, auto, overhead, scale, postgres, workers, fit, dedupe: one module per measurement,
                each a `measure`
    cli         the command line
"""
