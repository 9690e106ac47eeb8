"""The `dsv3` console command: one module per subcommand family, each with `register(subparsers)`."""
