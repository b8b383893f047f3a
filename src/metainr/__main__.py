from metainr.cli.main import main

main()
