from r1aqa_pl.cli import main

main()
