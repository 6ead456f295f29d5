from perserbench.cli import main

main()
