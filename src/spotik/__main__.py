from spotik.cli import main

main()
