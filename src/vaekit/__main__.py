from vaekit.cli.main import main

main()
