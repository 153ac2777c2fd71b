from advkit.cli import main

main(prog_name="advkit")
