from lumenserve.cli import main

main()
