from hnmine.cli.main import main

main()
