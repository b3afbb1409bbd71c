from opensage.cli import main

main()
