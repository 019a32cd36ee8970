from gamma_edge.cli import main

main()
