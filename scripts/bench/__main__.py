from scripts.bench.cli import main

main()
