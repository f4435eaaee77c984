"""The `tinynet` command (click), one module per subcommand; see cli.main."""
