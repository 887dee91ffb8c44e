from backhaul.cli.app import main

main()
