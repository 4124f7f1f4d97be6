from fertool.cli import main

main(prog_name="fertool")
